// core/src/cli.cpp — the `tessera` subcommands on CLI11: parse arguments, build, run, report.
// Every subcommand has a generated --help listing all its options; `--opt value` and
// `--opt=value` both work; an unknown or misplaced option is refused. Bad usage exits 2, a bad
// config, plugin or data file exits 1.
#include "tessera/core/cli.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "tessera/core/bench.hpp"
#include "tessera/core/checkpoint.hpp"
#include "tessera/core/data_inspect.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/generate.hpp"
#include "tessera/core/launch.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/output_guard.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/trainer.hpp"

namespace tessera {
namespace {

// "error: ", or "[rank N] error: " in a rank above 0 of a data-parallel job (RANK, as the
// launchers set it), so that the ranks' last words in one log say whose they are.
std::string error_prefix() {
  const char* rank = std::getenv("RANK");
  if (!rank || !*rank || std::string(rank) == "0") return "error: ";
  return std::string("[rank ") + rank + "] error: ";
}

const char* kMainFooter = R"(Each command takes --help (tessera train --help). Plugins are searched in [experiment]
plugin_path, then $TESSERA_PLUGIN_PATH (':'-separated), then beside the executable
(bin/../plugins, bin/../lib/tessera/plugins).)";

const char* kSetHelp =
    "override a config value (repeatable; --set > file > defaults); name an array-of-tables element by its "
    "`name` or 0-based index: --set encoder.image.channels=64, --set loss.0.weight=0.5";

// Everything the subcommands read, filled by CLI11 as text and checked by the command that
// uses it (so a bad value is reported with the flag and the expected form).
struct Args {
  std::string config, second;  // CONFIG (or CHECKPOINT, NAME, RUN_OR_CHECKPOINT); OUT for export
  std::vector<std::string> sets, plugin_paths, rank_args;
  std::string backends, out, weights, examples = "3", batches = "20", section;
  std::optional<std::string> prompt;
  std::string max_new_tokens = "64", temperature = "1.0", top_k = "0", seed = "0", context = "0";
  std::string input = "input_ids", output = "logits";
  std::string nproc = "1", nnodes = "1", node_rank = "0", master_addr = "127.0.0.1", master_port;
  bool overwrite = false, port_given = false;
};

// The value of a flag that takes a whole number, 0 or more; std::invalid_argument naming the flag.
int64_t count_value(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long long n = -1;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
  }
  if (n < 0 || used != v.size() || v.empty() || !std::isdigit(static_cast<unsigned char>(v[0])))
    throw std::invalid_argument(flag + " expects a whole number, 0 or more, got '" + v + "'");
  return n;
}

// A launch flag's integer value: all of it a decimal number within [lo, hi], or an error
// naming the flag and the expected form.
int launch_int(const std::string& flag, const std::string& text, int lo, int hi, const std::string& form) {
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(text, &used, 10);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !std::isdigit(static_cast<unsigned char>(text[0])) || v < lo || v > hi)
    throw std::invalid_argument(flag + " expects " + form + ", got '" + text + "'");
  return static_cast<int>(v);
}

// `text` as lines of at most `width` columns, broken at spaces; its own newlines are kept.
std::string wrap(const std::string& text, size_t width = 96) {
  std::string out, line;
  std::istringstream paragraphs(text);
  for (std::string para; std::getline(paragraphs, para);) {
    std::istringstream words(para);
    line.clear();
    for (std::string w; words >> w;) {
      if (!line.empty() && line.size() + 1 + w.size() > width) out += line + "\n", line.clear();
      line += (line.empty() ? "" : " ") + w;
    }
    out += line + "\n";
  }
  return out;
}

void add_sets(CLI::App* cmd, Args& a) {
  cmd->add_option("--set", a.sets, kSetHelp)->type_name("SECTION.KEY=VALUE")->allow_extra_args(false);
}
void add_plugin_path(CLI::App* cmd, Args& a) {
  cmd->add_option("--plugin-path", a.plugin_paths, "search DIR for plugins first (repeatable)")
      ->type_name("DIR")
      ->allow_extra_args(false);
}

void print_summary(const TrainSummary& s) {
  std::cout << std::fixed << std::setprecision(2) << "trained " << s.steps << " steps, " << s.epochs << " epochs in "
            << s.train_seconds << " s; final loss " << std::setprecision(4) << s.final_loss;
  if (s.eval_accuracy >= 0) std::cout << std::setprecision(2) << "; test accuracy " << 100.0 * s.eval_accuracy << "%";
  if (s.zero_shot_accuracy >= 0)
    std::cout << std::setprecision(2) << "; zero-shot accuracy " << 100.0 * s.zero_shot_accuracy << "%";
  if (s.zero_shot_audio_accuracy >= 0)
    std::cout << std::setprecision(2) << "; zero-shot audio accuracy " << 100.0 * s.zero_shot_audio_accuracy << "%";
  if (s.recall_at_1 >= 0) std::cout << std::setprecision(2) << "; retrieval R@1 " << 100.0 * s.recall_at_1 << "%";
  if (s.eval_loss >= 0) std::cout << std::setprecision(4) << "; eval loss " << s.eval_loss;
  if (s.perplexity >= 0) std::cout << std::setprecision(2) << " (perplexity " << s.perplexity << ")";
  std::cout << "\noutputs: " << s.output_dir << "\n";
}

int cmd_train(Args& a) {
  if (a.overwrite) a.sets.push_back("experiment.on_existing=\"overwrite\"");  // last: it wins
  Config cfg = Config::load(a.config, a.sets);
  setup_process(cfg);  // log level, threads: before anything logs or computes
  install_stop_signals();
  spdlog::info("config {} (resolved):\n{}", cfg.path(), cfg.dump());
  Experiment exp(cfg);
  spdlog::info("experiment:\n{}", exp.describe());
  TrainSummary s = exp.train();
  if (exp.is_main_rank()) print_summary(s);
  return 0;
}

int cmd_check(const Args& a) {
  Config cfg = Config::load(a.config, a.sets);
  setup_process(cfg);
  Experiment exp(cfg, /*load_data=*/false);
  std::cout << cfg.path() << ": OK\n" << exp.describe();
  return 0;
}

PluginRegistry scan(const Args& a) {
  PluginRegistry reg;
  reg.scan(PluginRegistry::default_search_path(a.plugin_paths));
  return reg;
}

void print_key(std::ostream& os, const KeySpec& k) {
  os << "  " << std::left << std::setw(18) << k.name << std::setw(18) << to_string(k.type) << "default "
     << std::setw(14) << (k.default_toml ? *k.default_toml : std::string("(required)"));
  if (k.min_value <= k.max_value) os << " range [" << k.min_value << ", " << k.max_value << "]";
  for (size_t i = 0; i < k.choices.size(); ++i) os << (i ? " | " : " one of: ") << k.choices[i];
  os << "\n      " << k.doc << "\n";
}

int cmd_plugins_inspect(const Args& a) {
  PluginRegistry reg = scan(a);
  for (const auto& lib : reg.plugins()) {
    if (lib->name() != a.config) continue;
    std::cout << lib->name() << " " << lib->version() << "\n"
              << "  kind:        " << lib->kind() << "\n"
              << "  ABI:         " << lib->abi_major() << "." << lib->abi_minor() << "\n"
              << "  LibTorch:    " << (lib->torch_version().empty() ? "not used" : lib->torch_version()) << "\n"
              << "  file:        " << lib->path() << "\n"
              << "  description: " << lib->description() << "\n"
              << "config keys (" << lib->schema().keys.size() << "):\n";
    for (const auto& k : lib->schema().keys) print_key(std::cout, k);
    return 0;
  }
  // Not loaded: a library of that file name that failed says why.
  for (const auto& f : reg.failures()) {
    const std::string stem = std::filesystem::path(f.path).stem().string();
    if (stem == a.config || stem == "plugin_" + a.config || stem == "lib" + a.config)
      throw PluginError("plugin '" + a.config + "' did not load: " + f.reason);
  }
  std::vector<std::string> names;
  for (const auto& lib : reg.plugins()) names.push_back(lib->name());
  std::string msg = "no plugin named '" + a.config + "'";
  const std::string near = nearest(a.config, names);
  if (!near.empty()) msg += "; did you mean '" + near + "'?";
  if (!reg.failures().empty()) msg += " (" + std::to_string(reg.failures().size()) + " librar" +
                                      (reg.failures().size() == 1 ? "y" : "ies") + " did not load: see `tessera plugins`)";
  throw PluginError(msg);
}

int cmd_plugins(const Args& a) {
  PluginRegistry reg = scan(a);
  int width = 16;  // the longest name and two spaces, so a long name never runs into its kind
  for (const auto& lib : reg.plugins()) width = std::max(width, static_cast<int>(lib->name().size()) + 2);
  std::cout << std::left << std::setw(width) << "NAME" << std::setw(22) << "KIND" << std::setw(10) << "VERSION"
            << std::setw(6) << "ABI" << "PATH\n";
  for (const auto& lib : reg.plugins())
    std::cout << std::setw(width) << lib->name() << std::setw(22) << lib->kind() << std::setw(10) << lib->version()
              << std::setw(6) << (std::to_string(lib->abi_major()) + "." + std::to_string(lib->abi_minor()))
              << lib->path() << "\n";
  for (const auto& f : reg.failures()) std::cout << "not loaded: " << f.reason << "\n";
  if (reg.searched().empty()) std::cout << "(no plugin directory found; set TESSERA_PLUGIN_PATH)\n";
  return 0;
}

int cmd_bench(const Args& a) {
  Config::load(a.config, a.sets);  // fail early on a bad config or override
  BenchOptions o;
  o.config = a.config;
  o.sets = a.sets;
  if (!a.backends.empty()) {
    o.backends.clear();
    std::stringstream ss(a.backends);
    for (std::string b; std::getline(ss, b, ',');)
      if (!b.empty()) o.backends.push_back(b);
    if (o.backends.empty()) throw std::invalid_argument("--backends expects a comma-separated list of precision backends");
  }
  if (!a.out.empty()) o.out_dir = a.out;
  o.self_exe = std::filesystem::read_symlink("/proc/self/exe").string();
  auto rows = run_bench(o);
  const std::string table = bench_table(rows);
  std::cout << table;
  std::ofstream(o.out_dir + "/bench.json") << bench_json(o, rows);
  std::ofstream(o.out_dir + "/bench.txt") << table;
  std::cout << "written: " << o.out_dir << "/bench.json\n";
  for (const auto& r : rows)
    if (!r.ok) {
      std::cerr << "error: backend '" << r.backend << "' failed (see the table above)\n";
      return 1;
    }
  return 0;
}

int cmd_launch(const Args& a, bool saw_separator) {
  LaunchOptions o;
  o.nproc = launch_int("--nproc", a.nproc, 1, 4096, "a number of processes per node, 1 or more");
  o.nnodes = launch_int("--nnodes", a.nnodes, 1, 1 << 16, "a number of nodes, 1 or more");
  o.node_rank = launch_int("--node-rank", a.node_rank, 0, 1 << 16, "this node's index, 0 to --nnodes minus 1");
  const bool port_given = a.port_given;
  if (port_given) o.master_port = launch_int("--master-port", a.master_port, 1, 65535, "a TCP port number in 1..65535");
  o.master_addr = a.master_addr;
  if (o.master_addr.empty() || o.master_addr.find_first_of(" \t/") != std::string::npos)
    throw std::invalid_argument("--master-addr expects a host name or IP address, got '" + o.master_addr + "'");
  if (o.node_rank >= o.nnodes)
    throw std::invalid_argument("--node-rank expects this node's index, 0 to --nnodes minus 1 (" +
                                std::to_string(o.nnodes - 1) + "), got " + std::to_string(o.node_rank));
  if (o.nnodes > 1 && !port_given)
    throw std::invalid_argument("--master-port is required with --nnodes > 1 (every node must name the same port)");
  if (!saw_separator || a.rank_args.empty())
    throw std::invalid_argument("launch needs -- followed by the rank's arguments (tessera launch --nproc 2 -- train CONFIG)");
  o.args = a.rank_args;
  o.exe = std::filesystem::read_symlink("/proc/self/exe").string();
  return launch_ranks(o);
}

int cmd_eval(const Args& a) {
  Config cfg = Config::load(a.config, a.sets);
  setup_process(cfg);
  Experiment exp(cfg);
  exp.load_weights(a.weights);
  const EvalResult r = exp.evaluate();
  std::cout << std::fixed << std::setprecision(2) << "evaluated " << a.weights << ":";
  if (r.accuracy >= 0) std::cout << " test accuracy " << 100.0 * r.accuracy << "%, test loss " << std::setprecision(4) << r.loss;
  if (r.zero_shot_accuracy >= 0) std::cout << std::setprecision(2) << "; zero-shot accuracy " << 100.0 * r.zero_shot_accuracy << "%";
  if (r.zero_shot_audio_accuracy >= 0)
    std::cout << std::setprecision(2) << "; zero-shot audio accuracy " << 100.0 * r.zero_shot_audio_accuracy << "%";
  if (r.recall_at_1 >= 0) std::cout << std::setprecision(2) << "; retrieval R@1 " << 100.0 * r.recall_at_1 << "%";
  std::cout << "\n";
  return 0;
}

int cmd_generate(const Args& a) {
  GenerateOptions g;
  g.source = a.config;
  g.prompt = *a.prompt;
  g.sets = a.sets;
  g.max_new_tokens = count_value("--max-new-tokens", a.max_new_tokens);
  g.top_k = count_value("--top-k", a.top_k);
  g.context = count_value("--context", a.context);
  g.seed = static_cast<uint64_t>(count_value("--seed", a.seed));
  size_t used = 0;
  double t = -1;
  try {
    t = std::stod(a.temperature, &used);
  } catch (const std::exception&) {
  }
  if (!(t >= 0) || used != a.temperature.size())
    throw std::invalid_argument("--temperature expects a number, 0 or more, got '" + a.temperature + "'");
  g.temperature = t;
  g.input = a.input;
  g.output = a.output;
  // The text alone goes to stdout (for pipes); the log goes to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("tessera-generate"));
  generate(g, std::cout);
  return 0;
}

int cmd_init(const Args& a) {
  Config cfg = Config::load(a.config, a.sets);
  setup_process(cfg);
  Experiment exp(cfg);  // with its flat buffers: the weights as training would start from them
  exp.save_model(a.out, 0);
  return 0;
}

int cmd_data_inspect(const Args& a) {
  InspectOptions o;
  o.config = a.config;
  o.sets = a.sets;
  o.examples = count_value("--examples", a.examples);
  o.batches = count_value("--batches", a.batches);
  o.sheet = a.out;
  inspect_data(o, std::cout);
  return 0;
}

int cmd_export(const Args& a) {
  refuse_output_inside(a.config, a.second, "the checkpoint");
  const size_t n = export_checkpoint(a.config, a.second);
  std::cout << "exported " << n << " tensors to " << a.second << "\n";
  return 0;
}

// The core's sections and the slots' core keys, as TOML with each key's documentation.
struct DefaultsSection {
  const char* header;
  const Schema& schema;
};
std::vector<DefaultsSection> core_sections() {
  return {{"[experiment]", experiment_schema()}, {"[data]", data_schema()},       {"[optimizer]", optimizer_schema()},
          {"[schedule]", schedule_schema()},     {"[train]", train_schema()},     {"[eval]", eval_schema()},
          {"[metrics]", metrics_schema()},       {"[checkpoint]", checkpoint_schema()}, {"[dist]", dist_schema()},
          {"[[encoder]]", encoder_slot_schema()}, {"[[loss]]", loss_slot_schema()}, {"[precision]", precision_slot_schema()}};
}

std::string bound(double v, ValueType t) {
  std::ostringstream o;
  if (t == ValueType::Int && std::abs(v) < 9e15) o << static_cast<long long>(v);
  else o << v;
  return o.str();
}

int cmd_config_defaults(const Args& a) {
  const auto sections = core_sections();
  bool found = a.section.empty();
  std::ostringstream os;
  os << "# Every key the core reads, with its default. A plugin's own keys (in its [[encoder]], [[loss]],\n"
        "# [precision] or [data] table): tessera plugins inspect NAME.\n";
  for (const auto& s : sections) {
    std::string bare = s.header;
    bare.erase(std::remove(bare.begin(), bare.end(), '['), bare.end());
    bare.erase(std::remove(bare.begin(), bare.end(), ']'), bare.end());
    if (!a.section.empty() && a.section != bare) continue;
    found = true;
    os << "\n" << s.header << "\n";
    for (const auto& k : s.schema.keys) {
      os << "# " << k.doc;
      if (k.min_value <= k.max_value) os << " [" << bound(k.min_value, k.type) << ", " << bound(k.max_value, k.type) << "]";
      for (size_t i = 0; i < k.choices.size(); ++i) os << (i ? " | " : "; one of: ") << k.choices[i];
      os << "\n";
      if (k.default_toml) os << k.name << " = " << *k.default_toml << "\n";
      else os << "# " << k.name << " = ...  (required, " << to_string(k.type) << ")\n";
    }
  }
  if (!found) {
    std::vector<std::string> names;
    for (const auto& s : sections) {
      std::string bare = s.header;
      bare.erase(std::remove(bare.begin(), bare.end(), '['), bare.end());
      bare.erase(std::remove(bare.begin(), bare.end(), ']'), bare.end());
      names.push_back(bare);
    }
    std::string msg = "config defaults: no section '" + a.section + "'";
    const std::string near = nearest(a.section, names);
    if (!near.empty()) msg += "; did you mean '" + near + "'?";
    throw std::invalid_argument(msg);
  }
  std::cout << os.str();
  return 0;
}

struct Cli {
  CLI::App app{"tessera — a trainer framework built from plugins", "tessera"};
  Args a;
  CLI::App *train, *check, *plugins, *inspect, *bench, *launch, *exp, *eval, *init, *generate, *data, *data_inspect,
      *tokenize, *speak, *config, *defaults;

  Cli() {
    app.footer(kMainFooter);
    app.set_version_flag("--version", std::string("tessera ") + TESSERA_VERSION + " (plugin ABI " +
                                          std::to_string(TSR_ABI_MAJOR) + "." + std::to_string(TSR_ABI_MINOR) +
                                          ", LibTorch " + core_torch_version() + ")",
                         "print versions and exit");
    app.require_subcommand(1);

    train = app.add_subcommand("train", "train the experiment CONFIG describes");
    train->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    add_sets(train, a);
    train->add_flag("--overwrite", a.overwrite,
                    "replace an earlier run in the output directory (same as --set experiment.on_existing=overwrite)");
    train->footer(wrap("Writes metrics.jsonl (also .csv and TensorBoard events when [metrics] asks), config.resolved.toml (every "
        "key, defaults included) and model.safetensors to [experiment] output_dir (default runs/<name>). An output "
        "directory that holds an earlier run is refused unless resuming ([checkpoint] resume), --overwrite, or "
        "[experiment] on_existing = \"suffix\". Ctrl-C / SIGTERM stop at the step boundary (checkpointing first when "
        "[checkpoint] every_steps is on) and exit 130 / 143."));

    check = app.add_subcommand("check", "validate CONFIG and resolve its plugins; trains nothing");
    check->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    add_sets(check, a);
    check->footer(wrap("Validates every key, type and range against the core's and each plugin's schema, loads and creates every "
        "plugin, and prints the resolved experiment. Exit status 0 when the experiment would start, 1 otherwise."));

    plugins = app.add_subcommand("plugins", "list the plugins found on the search path");
    add_plugin_path(plugins, a);
    plugins->footer(wrap("Lists name, kind, version, ABI and file of every plugin, and each library that did not load, "
                    "with the reason."));
    inspect = plugins->add_subcommand("inspect", "describe a plugin and every config key it takes");
    inspect->add_option("NAME", a.config, "the plugin's name")->required();
    add_plugin_path(inspect, a);

    bench = app.add_subcommand("bench", "train CONFIG once per precision backend and compare");
    bench->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    bench->add_option("--backends", a.backends, "comma-separated backends (default fp32,bf16,bf16_remainder,bf16_pure,fp16)")
        ->type_name("A,B,...");
    bench->add_option("--out", a.out, "where bench.json, bench.txt and each run go (default runs/bench)")->type_name("DIR");
    add_sets(bench, a);
    bench->footer(wrap("Each backend trains in its own process. The table: median step time and samples/s (first logging window "
        "excluded as warm-up), model-state bytes/parameter, peak resident memory, final loss and test accuracy. A "
        "backend that fails is reported with its error and makes the exit status 1."));

    launch = app.add_subcommand("launch", "run N local ranks of `tessera ARGS...` (data parallel, torchrun's variables)");
    launch->add_option("--nproc,--nproc-per-node,--nproc_per_node", a.nproc, "processes on this node (default 1)")
        ->type_name("N");
    launch->add_option("--nnodes", a.nnodes, "machines in the job (default 1)")->type_name("M");
    launch->add_option("--node-rank,--node_rank", a.node_rank, "this machine's index, 0..M-1 (default 0)")->type_name("K");
    launch->add_option("--master-addr,--master_addr", a.master_addr, "node 0's address (default 127.0.0.1)")
        ->type_name("HOST");
    launch->add_option("--master-port,--master_port", a.master_port, "the rendezvous port (default: a free one; required with M > 1)")
        ->type_name("P");
    launch->add_option("ARGS", a.rank_args, "after --: the arguments of every rank's `tessera` (e.g. train CONFIG)");
    launch->footer(wrap("Sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT as torchrun does. On M "
        "machines run it once per machine with the same --nnodes, --master-addr and --master-port: RANK = K * N + "
        "LOCAL_RANK. SIGINT/SIGTERM are forwarded to every rank; when one rank fails the others are stopped and the "
        "exit status is the failing rank's.\nExample: tessera launch --nproc 2 -- train configs/fashion_mnist.toml"));

    exp = app.add_subcommand("export", "the weights of a checkpoint (any world size) as one safetensors file");
    exp->add_option("CHECKPOINT", a.config, "a checkpoint directory")->required();
    exp->add_option("OUT", a.second, "the .safetensors file to write (not inside CHECKPOINT)")->required();
    exp->footer(wrap("One tensor per parameter, by name, in its shape, at the best precision the checkpoint holds (fp32 "
                "when the run kept an fp32 master), and the encoders' buffers (BatchNorm statistics)."));

    eval = app.add_subcommand("eval", "evaluate a model file (model.safetensors, an export) in a fresh process");
    eval->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    eval->add_option("--weights", a.weights, "the model file")->type_name("FILE")->required();
    add_sets(eval, a);

    init = app.add_subcommand("init", "write the model's initial weights (step 0) as a model file");
    init->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    init->add_option("--out", a.out, "the .safetensors file to write")->type_name("FILE")->required();
    add_sets(init, a);

    generate = app.add_subcommand("generate", "sample text from a trained language model");
    generate->add_option("RUN_OR_CHECKPOINT", a.config, "a run directory, a checkpoint directory or a model file")
        ->required();
    generate->add_option("--prompt", a.prompt, "the text to continue")->type_name("TEXT")->required();
    generate->add_option("--max-new-tokens", a.max_new_tokens, "tokens to generate (default 64)")->type_name("N");
    generate->add_option("--temperature", a.temperature, "divide the logits by T; 0 = greedy (default 1.0)")->type_name("T");
    generate->add_option("--top-k", a.top_k, "sample among the K most likely tokens; 0 = all (default 0)")->type_name("K");
    generate->add_option("--seed", a.seed, "the sampler's seed (default 0)")->type_name("S");
    generate->add_option("--context", a.context, "the model sees the last N tokens; 0 = its max_seq_len")->type_name("N");
    generate->add_option("--input", a.input, "the tokens' batch tensor and tokenizer field (default input_ids)")
        ->type_name("NAME");
    generate->add_option("--output", a.output, "the (B, T, V) logits the model writes (default logits)")->type_name("NAME");
    add_sets(generate, a);
    generate->footer(wrap("The model is rebuilt from the config stored with the weights; the prompt is encoded and the "
                     "result decoded by its dataset's tokenizer. The text goes to stdout, the log to stderr."));

    data = app.add_subcommand("data", "inspect a dataset; prepare token shards and spoken captions");
    data->require_subcommand(1);
    data_inspect = data->add_subcommand("inspect", "what CONFIG's dataset holds and how fast it loads");
    data_inspect->add_option("CONFIG", a.config, "the experiment's TOML file")->required();
    data_inspect->add_option("--examples", a.examples, "decoded examples of the training split (default 3)")->type_name("N");
    data_inspect->add_option("--batches", a.batches, "batches timed through the loader; 0 = none (default 20)")
        ->type_name("N");
    data_inspect->add_option("--out", a.out, "the contact sheet (default <output_dir>/contact_sheet.png)")
        ->type_name("SHEET.png");
    add_sets(data_inspect, a);
    data_inspect->footer(wrap("Prints each split's size, every field's dtype and shape, the metadata (class names, "
                         "prompts), the first examples in their epoch-0 order, writes a PNG contact sheet when a "
                         "field holds images, and times batches with the configured batch_size and workers."));
    // Provided by the tessera executable (tools/tessera/), which core does not link.
    tokenize = data->add_subcommand("tokenize", "text -> SentencePiece -> llm.c token shards (see its --help)");
    speak = data->add_subcommand("speak", "Fashion-MNIST's captions -> espeak-ng -> a spoken-caption cache (see its --help)");
    for (CLI::App* c : {tokenize, speak}) c->prefix_command()->set_help_flag();

    config = app.add_subcommand("config", "the core's configuration keys");
    config->require_subcommand(1);
    defaults = config->add_subcommand("defaults", "print every core key with its default, as TOML");
    defaults->add_option("SECTION", a.section, "only this section (experiment, data, optimizer, ..., encoder, loss)");
  }
};

std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* c : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(c->get_name());
  return names;
}

}  // namespace

int run_cli(const std::vector<std::string>& args) {
  Cli cli;
  CLI::App& app = cli.app;
  try {
    if (args.size() < 2) {
      std::cout << app.help();
      return 2;
    }
    if (args[1] == "help") {
      std::cout << app.help();
      return 0;
    }
    // An unknown command: name it and the nearest one (CLI11 would only say "not expected").
    if (args[1].empty() || args[1][0] != '-') {
      const auto names = command_names(app);
      if (std::find(names.begin(), names.end(), args[1]) == names.end()) {
        std::string msg = "unknown command '" + args[1] + "'";
        const std::string near = nearest(args[1], names);
        if (!near.empty()) msg += "; did you mean '" + near + "'?";
        throw std::invalid_argument(msg);
      }
    }
    // A command's subcommand, checked the same way (CLI11 would say "A subcommand is required").
    if (args.size() >= 3 && (args[1] == "data" || args[1] == "config") && !args[2].empty() && args[2][0] != '-') {
      const CLI::App* cmd = app.get_subcommand(args[1]);
      const auto names = command_names(*cmd);
      if (std::find(names.begin(), names.end(), args[2]) == names.end()) {
        std::string msg = "unknown " + args[1] + " subcommand '" + args[2] + "'";
        const std::string near = nearest(args[2], names);
        if (!near.empty()) msg += "; did you mean '" + near + "'?";
        std::string all;
        for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
        throw std::invalid_argument(msg + " (" + all + ")");
      }
    }
    // "--opt=" with nothing after the "=": an empty value (CLI11 would take the next argument).
    std::vector<std::string> split;
    bool rank_args = false;
    for (const auto& s : args) {
      rank_args = rank_args || s == "--";
      if (!rank_args && s.size() > 3 && s.rfind("--", 0) == 0 && s.back() == '=' && s.find('=') == s.size() - 1) {
        split.push_back(s.substr(0, s.size() - 1));
        split.emplace_back();
      } else {
        split.push_back(s);
      }
    }
    std::vector<const char*> argv;
    for (const auto& s : split) argv.push_back(s.c_str());
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      // Which command's help to point at: the deepest one that was given.
      std::string where = "tessera";
      for (const CLI::App* c = &app; c;) {
        const auto got = c->get_subcommands();
        c = got.empty() ? nullptr : got.front();
        if (c) where += " " + c->get_name();
      }
      throw std::invalid_argument(std::string(e.what()) + "\n(see " + where + " --help)");
    }
    Args& a = cli.a;
    // launch first: a rank's arguments without -- would also match a sibling (train CONFIG).
    if (*cli.launch) {
      a.port_given = cli.launch->get_option("--master-port")->count() > 0;
      const auto sep = std::find(args.begin(), args.end(), "--");
      return cmd_launch(a, sep != args.end());
    }
    if (*cli.train) return cmd_train(a);
    if (*cli.check) return cmd_check(a);
    if (*cli.inspect) return cmd_plugins_inspect(a);
    if (*cli.plugins) return cmd_plugins(a);
    if (*cli.bench) return cmd_bench(a);
    if (*cli.exp) return cmd_export(a);
    if (*cli.eval) return cmd_eval(a);
    if (*cli.init) return cmd_init(a);
    if (*cli.generate) return cmd_generate(a);
    if (*cli.data_inspect) return cmd_data_inspect(a);
    if (*cli.tokenize || *cli.speak)
      throw std::invalid_argument("tessera data " + args[2] + " is provided by the tessera executable, not this library");
    if (*cli.defaults) return cmd_config_defaults(a);
    throw std::invalid_argument("unknown command '" + args[1] + "'");
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    std::cerr << error_prefix() << m << (m.find("(see tessera") == std::string::npos ? "\n(see tessera --help)\n" : "\n");
    return 2;
  } catch (const Interrupted& e) {
    std::cerr << e.what() << "\n";
    return 128 + e.signal();
  } catch (const Error& e) {
    std::cerr << error_prefix() << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << error_prefix() << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << error_prefix() << e.what() << "\n";
    return 1;
  }
}

}  // namespace tessera
