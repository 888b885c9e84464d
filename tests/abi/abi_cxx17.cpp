// tests/abi/abi_cxx17.cpp — abi.h must compile as strict C++17 (-pedantic -Werror) and is
// usable without any other header; compiled as part of the build, nothing to run.
#include <tessera/abi.h>
#include <tessera/half.h>

static_assert(TSR_ABI_MAJOR == 1, "this check is written for ABI 1.x");
const tsr_plugin_descriptor* tessera_abi_cxx17_probe();
const tsr_plugin_descriptor* tessera_abi_cxx17_probe() { return nullptr; }
