// core/src/shard.cpp — ShardView: a flat buffer's element range wrapped as a tsr_flat_shard.
#include "tessera/core/shard.hpp"

#include "tessera/core/plugin_host.hpp"

namespace tessera {

ShardView::ShardView(FlatParamBuffer& buf, const tsr_precision_info& info, OwnedRange range) {
  params = wrap_tensor(buf.params.narrow(0, range.begin, range.numel()));
  grads = wrap_tensor(buf.grads.narrow(0, range.begin - buf.grad_begin, range.numel()));
  shard = {sizeof(tsr_flat_shard), buf.name.c_str(), info.param_dtype, info.grad_dtype, params, grads, range.begin,
           range.numel()};
}

ShardView::~ShardView() {
  release_tensor(params);
  release_tensor(grads);
}

}  // namespace tessera
