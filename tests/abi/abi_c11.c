/* tests/abi/abi_c11.c — abi.h and half.h must compile as strict C11 (-std=c11 -pedantic -Werror),
 * with its layout static-asserts; compiled as part of the build, nothing to run. */
#include <tessera/abi.h>
#include <tessera/half.h> /* and the 16-bit float helpers, also strict C11 */

const tsr_plugin_descriptor* tessera_abi_c11_probe(void);
const tsr_plugin_descriptor* tessera_abi_c11_probe(void) { return (const tsr_plugin_descriptor*)0; }
