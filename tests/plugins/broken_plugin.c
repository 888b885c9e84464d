/* tests/plugins/broken_plugin.c — deliberately broken encoder plugins, one per loader error.
 * Compiled several times as plain C11, each with one BROKEN_* definition (tests/CMakeLists.txt). */
#include <tessera/abi.h>

#include <stddef.h>


static int instance_storage;

static tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) {
  (void)cfg;
  (void)instance_storage;
  (void)host;
#if defined(BROKEN_CREATE_FAILS)
  host->set_error(host->ctx, "deliberate failure: the widget is missing");
  (void)out;
  return TSR_ERR_RUNTIME;
#else
  *out = (tsr_instance*)&instance_storage;
  return TSR_OK;
#endif
}
static void destroy(tsr_instance* self) { (void)self; }
static tsr_status parameters(tsr_instance* self, tsr_param_visitor visit, void* user) {
  (void)self; (void)visit; (void)user;
  return TSR_OK;
}
static tsr_status forward(tsr_instance* self, tsr_tensor_set* batch) {
  (void)self; (void)batch;
  return TSR_OK;
}
static const tsr_encoder_vtable vtable = {sizeof(tsr_encoder_vtable), parameters, NULL, forward, NULL, NULL};
static const tsr_config_key keys[] = {
    {sizeof(tsr_config_key), "size", TSR_CONFIG_INT, "3", "a key", 1.0, 10.0, NULL}};

#ifndef BROKEN_NAME
#define BROKEN_NAME "broken"
#endif
#if defined(BROKEN_ABI_MAJOR)
#define MAJOR (TSR_ABI_MAJOR + 1)
#else
#define MAJOR TSR_ABI_MAJOR
#endif
#if defined(BROKEN_NEWER_MINOR)
#define MINOR (TSR_ABI_MINOR + 7)
#else
#define MINOR TSR_ABI_MINOR
#endif
#if defined(BROKEN_TORCH_VERSION)
#define TORCH "0.1.0"
#else
#define TORCH NULL
#endif

/* A descriptor as a newer SDK might write it: the 1.0 fields, then fields appended later. */
typedef struct newer_descriptor {
  tsr_plugin_descriptor v1;
  const char* homepage;
  uint64_t future_flags;
} newer_descriptor;

static const newer_descriptor descriptor = {
    {
#if defined(BROKEN_NEWER_MINOR)
        sizeof(newer_descriptor),
#else
        sizeof(tsr_plugin_descriptor),
#endif
        MAJOR, MINOR, BROKEN_NAME, "0.0.1", TSR_KIND_ENCODER, "A deliberately broken test plugin.", TORCH, keys, 1,
        create, destroy, &vtable},
    "https://example.invalid",
    0xFFFFu};

#if defined(BROKEN_NO_ENTRY)
TSR_EXPORT const tsr_plugin_descriptor* some_other_function(void) { return &descriptor.v1; }
#elif defined(BROKEN_NULL_DESCRIPTOR)
TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return descriptor.v1.name ? NULL : &descriptor.v1; }
#else
TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return &descriptor.v1; }
#endif
