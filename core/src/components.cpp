// core/src/components.cpp — builds the experiment's plugin instances from their config slots
// and runs them: encoders' forward, the losses' terms (optionally over all-gathered rows).
#include "tessera/core/components.hpp"

#include <algorithm>
#include <torch/csrc/autograd/custom_function.h>

#include <sstream>

#include "tessera/core/error.hpp"

namespace tessera {

// Each plugin instance initialises its parameters from its own stream, derived from the
// experiment seed and the instance's name: adding or reordering components changes no one
// else's initial weights, and a component built in another process starts identical.
void seed_for_instance(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  at::manual_seed(seed ^ h);
}

namespace {

// The `plugin` key of a slot table, read before the plugin (and so the full schema) is known.
std::string plugin_name(const Config& cfg, const toml::table& t, const Schema& core, const std::string& slot) {
  const toml::node* n = t.get("plugin");
  if (!n) {
    const KeySpec* k = core.find("plugin");
    if (k && k->default_toml) return std::get<std::string>(parse_toml_value(*k->default_toml, ValueType::String));
    SourcePos pos{cfg.path(), static_cast<int>(t.source().begin.line), static_cast<int>(t.source().begin.column)};
    throw ConfigError(pos.str() + ": missing required key 'plugin' in " + slot);
  }
  if (!n->is_string()) {
    SourcePos pos{cfg.path(), static_cast<int>(n->source().begin.line), static_cast<int>(n->source().begin.column)};
    throw ConfigError(pos.str() + ": key 'plugin' in " + slot + " must be a string");
  }
  return **n->as_string();
}

std::string slot_label(const char* kind, size_t i, const std::string& name) {
  return std::string("[[") + kind + "]] #" + std::to_string(i + 1) + (name.empty() ? "" : " '" + name + "'");
}

// All-gather of a batch tensor's rows with a gradient, as torch.distributed.nn.all_gather: the
// backward sums the gathered gradient over ranks and keeps this rank's rows. Every rank
// computes the loss of the whole global batch from the gathered rows (each with seeds carrying
// 1 / world size), so the sum over ranks is d(loss)/d(own rows), exactly once.
class AllGatherRows : public torch::autograd::Function<AllGatherRows> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, Comm* comm) {
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));  // outlives the graph
    ctx->saved_data["rows"] = rows.size(0);
    return comm->all_gather_rows(rows);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Comm*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor g = grads[0].contiguous().clone();
    comm->all_reduce_sum(g);
    return {g.narrow(0, comm->rank() * rows, rows), at::Tensor()};
  }
};

}  // namespace

namespace {

// One [[encoder]] / [[loss]] slot resolved: its plugin, validated table and instance name.
struct Slot {
  std::shared_ptr<PluginLibrary> lib;
  Section section;
  std::string name, label;
};

Slot resolve_slot(const Config& config, const PluginRegistry& registry, const toml::table& table, const char* kind,
                  size_t i, const Schema& core, const char* kind_id) {
  const std::string slot = slot_label(kind, i, "");
  Slot s;
  s.lib = registry.get(plugin_name(config, table, core, slot), kind_id, slot + " at " + config.path());
  s.section = config.resolve(table, core.with_plugin_keys(s.lib->schema(), slot), slot);
  s.name = s.section.get_string("name").empty() ? s.lib->name() : s.section.get_string("name");
  s.label = slot_label(kind, i, s.name) + " (" + s.lib->name() + ")";
  return s;
}

}  // namespace

Components::Components(const Config& config, const PluginRegistry& registry, uint64_t seed, FlatParams& params,
                       StateStore* states, at::Device device) {
  auto enc_tables = config.tables("encoder");
  if (enc_tables.empty()) throw ConfigError(config.path() + ": no [[encoder]] is configured; add at least one");
  std::vector<std::string> names;
  for (size_t i = 0; i < enc_tables.size(); ++i) {
    Slot s = resolve_slot(config, registry, *enc_tables[i], "encoder", i, encoder_slot_schema(), TSR_KIND_ENCODER);
    for (const auto& e : names)
      if (e == s.name)
        throw ConfigError(s.section.where("name").str() + ": two encoders are named '" + s.name +
                          "'; give each a distinct name");
    names.push_back(s.name);
    seed_for_instance(seed, "encoder." + s.name);
    auto inst = std::make_unique<EncoderInstance>(s.lib, s.section, s.label);
    for (auto& [pname, tensor] : inst->parameters()) params.add(s.name + "." + pname, tensor);
    encoders_.push_back(std::move(inst));
  }
  auto loss_tables = config.tables("loss");
  if (loss_tables.empty()) throw ConfigError(config.path() + ": no [[loss]] is configured; add at least one");
  for (size_t i = 0; i < loss_tables.size(); ++i) {
    Slot s = resolve_slot(config, registry, *loss_tables[i], "loss", i, loss_slot_schema(), TSR_KIND_LOSS);
    seed_for_instance(seed, "loss." + s.name);
    auto inst = std::make_unique<LossInstance>(s.lib, s.section, s.label);
    for (auto& [pname, tensor] : inst->parameters()) params.add(s.name + "." + pname, tensor);
    loss_weights_.push_back(s.section.get_float("weight"));
    loss_inputs_.emplace_back();
    counts_units_.push_back(inst->has_count_units());
    losses_.push_back(std::move(inst));
  }
  const toml::table& prec_table = config.table("precision");
  const std::string slot = "[precision]";
  auto lib = registry.get(plugin_name(config, prec_table, precision_slot_schema(), slot), TSR_KIND_PRECISION,
                          slot + " at " + config.path());
  Section sec = config.resolve(prec_table, precision_slot_schema().with_plugin_keys(lib->schema(), slot), slot);
  precision_ = std::make_unique<PrecisionInstance>(lib, sec, slot + " (" + lib->name() + ")", states);
  precision_info_ = precision_->describe();
  check_device_computes(precision_info_.param_dtype, "parameter", device);
  if (precision_info_.autocast_dtype != TSR_DTYPE_NONE) check_device_computes(precision_info_.autocast_dtype, "autocast", device);
}

void Components::resolved_tables(toml::table& root) const {
  toml::array encoders, losses;
  for (const auto& e : encoders_) encoders.push_back(e->config().to_table());
  for (const auto& l : losses_) losses.push_back(l->config().to_table());
  root.insert_or_assign("encoder", std::move(encoders));
  root.insert_or_assign("loss", std::move(losses));
  root.insert_or_assign("precision", precision_->config().to_table());
}

void Components::gather_across(Comm& comm) {
  for (size_t i = 0; i < losses_.size(); ++i) {
    const LossInstance& loss = *losses_[i];
    const std::vector<std::string> gather = loss.config().get_strings("gather");
    if (gather.empty()) continue;
    loss_inputs_[i] = [&comm, &loss, gather](const TensorMap& batch) {
      TensorMap global = batch;
      for (const auto& name : gather) {
        auto it = batch.find(name);
        if (it == batch.end())
          throw ConfigError(loss.config().where("gather").str() + ": no batch tensor named '" + name +
                            "' to gather for " + loss.label());
        global[name] = AllGatherRows::apply(it->second, &comm);
      }
      return global;
    };
  }
}

void Components::refuse_gather(const std::string& why) const {
  for (const auto& l : losses_)
    if (!l->config().get_strings("gather").empty())
      throw ConfigError(l->config().where("gather").str() + ": gather in " + l->label() + " " + why);
}

void Components::forward(TensorMap& batch, GradSync* sync) const {
  for (size_t i = 0; i < encoders_.size(); ++i) {  // each reads named inputs, writes outputs
    if (sync) sync->before_forward(i);
    encoders_[i]->forward(batch);
    if (sync) sync->after_forward(i);
  }
}

std::vector<Term> Components::terms(const TensorMap& batch, bool gather) const {
  std::vector<Term> terms;
  for (size_t i = 0; i < losses_.size(); ++i) {
    const size_t first = terms.size();
    if (gather && loss_inputs_[i]) losses_[i]->compute(loss_inputs_[i](batch), terms);
    else losses_[i]->compute(batch, terms);
    for (size_t t = first; t < terms.size(); ++t) {
      Term& term = terms[t];
      term.weight *= loss_weights_[i];
      term.loss = i;
      if (term.per_unit && !counts_units_[i])
        throw Error("term '" + term.name + "' from " + losses_[i]->label() +
                    " is a sum over units (tokens), but the loss does not count units (count_units, ABI 1.3)");
    }
  }
  return terms;
}

std::vector<int64_t> Components::count_units(const TensorMap& batch) const {
  std::vector<int64_t> units(losses_.size(), -1);
  for (size_t i = 0; i < losses_.size(); ++i) {
    if (!counts_units_[i]) continue;
    units[i] = *losses_[i]->count_units(batch);
    if (units[i] < 0) counts_units_[i] = false;  // this instance emits mean terms only: stop asking
    else if (loss_inputs_[i])  // before any forward or all-gather: every rank would count the gathered rows
      throw Error(losses_[i]->label() +
                  " sums its loss over units (tokens), which [[loss]] gather cannot normalise: drop gather for this loss");
  }
  return units;
}

bool Components::counts_units() const {
  return std::find(counts_units_.begin(), counts_units_.end(), true) != counts_units_.end();
}

double Components::flops(const TensorMap& batch) const {
  double total = 0;
  for (const auto& e : encoders_)
    if (const auto f = e->flops(batch)) total += *f;
  return total;
}

void Components::set_training(bool training) const {
  for (const auto& e : encoders_) e->set_training(training);
}

std::vector<std::pair<std::string, at::Tensor>> Components::encoder_buffers() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& e : encoders_) {
    const std::string& n = e->config().get_string("name");
    const std::string prefix = (n.empty() ? e->library().name() : n) + ".";
    for (auto& [name, t] : e->buffers()) out.emplace_back(prefix + name, t);
  }
  return out;
}

std::string Components::describe() const {
  std::ostringstream o;
  for (const auto& e : encoders_) o << "encoder   " << e->label() << "  <- " << e->library().path() << "\n";
  for (const auto& l : losses_) o << "loss      " << l->label() << "  <- " << l->library().path() << "\n";
  o << "precision " << precision_->label() << "  <- " << precision_->library().path() << "\n";
  return o.str();
}

void Components::check_device_computes(int32_t dtype, const char* role, at::Device device) const {
  const at::ScalarType t = to_scalar_type(dtype);
  if (t == at::kFloat || t == at::kDouble) return;
  // Try the two ops every encoder leans on, on a tiny problem, in that dtype on this device.
  try {
    auto o = at::TensorOptions().dtype(t).device(device);
    at::Tensor x = at::ones({2, 1, 4, 4}, o), w = at::ones({2, 1, 3, 3}, o);
    at::conv2d(x, w);
    at::linear(at::ones({2, 3}, o), at::ones({4, 3}, o));
  } catch (const c10::Error& e) {
    throw ConfigError(precision_->config().where("plugin").str() + ": precision backend " + precision_->label() +
                      " needs " + role + " dtype " + c10::toString(t) + ", which LibTorch " + core_torch_version() +
                      " cannot compute on " + device.str() + " (" + e.what_without_backtrace() +
                      "); choose another [precision] plugin or device");
  }
}

}  // namespace tessera
