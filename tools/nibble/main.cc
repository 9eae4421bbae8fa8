#include <cstdio>
#include "nibble/nibble.h"
int main() { std::printf("nibble %s\n", NIBBLE_VERSION_STRING); return 0; }
