#include <cstdio>
int main() { std::puts("vgen"); return 0; }
