// core/src/cli.cpp — the `tessera` subcommands: parse arguments, build, run, report.
// Each subcommand has --help; bad usage exits 2, a bad config or plugin exits 1.
#include "tessera/core/cli.hpp"

#include <cctype>
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
#include "tessera/core/output_guard.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/trainer.hpp"

namespace tessera {
namespace {

const char* kMainHelp = R"(tessera — a trainer framework built from plugins

usage: tessera <command> [options]

commands:
  train CONFIG [--set section.key=value]...   train the experiment CONFIG describes
  check CONFIG [--set section.key=value]...   validate CONFIG and resolve its plugins, no training
  plugins [--plugin-path DIR]...              list the plugins found on the search path
  plugins inspect NAME [--plugin-path DIR]... describe a plugin and every config key it takes
  launch --nproc N [--master-port P] -- ARGS... run N local ranks of `tessera ARGS` (data parallel)
  export CHECKPOINT OUT.safetensors           the weights of a checkpoint (any world size) as one file
  eval CONFIG --weights FILE [--set k=v]...   evaluate a model file (model.safetensors, an export)
  init CONFIG --out FILE [--set k=v]...       write the model's initial weights (step 0) as a model file
  generate RUN_OR_CHECKPOINT --prompt TEXT    sample text from a trained language model
  bench CONFIG [--backends a,b,..] [--out DIR] [--set k=v]...
                                              train CONFIG once per precision backend, compare
  data inspect CONFIG [--set k=v]...          what CONFIG's dataset holds and how fast it loads
  data tokenize ...                           text -> SentencePiece -> llm.c token shards
  data speak ...                              Fashion-MNIST's captions -> espeak-ng -> a spoken-caption cache

options:
  -h, --help     help (also after a command: tessera train --help)
  --version      print versions

Plugins are searched in [experiment] plugin_path, then $TESSERA_PLUGIN_PATH (':'-separated),
then beside the executable (bin/../plugins, bin/../lib/tessera/plugins).
)";

const char* kTrainHelp = R"(usage: tessera train CONFIG [--set section.key=value]...

Trains the experiment described by the TOML file CONFIG. --set overrides a value of the file
(precedence: --set > file > defaults); for arrays of tables name the element by its `name`
key or its index: --set encoder.image.channels=64, --set loss.0.weight=0.5.
Writes metrics.jsonl, config.resolved.toml and model.safetensors to [experiment] output_dir.
)";

const char* kCheckHelp = R"(usage: tessera check CONFIG [--set section.key=value]...

Validates CONFIG (every key, type and range, against the core's and each plugin's schema),
loads and creates every plugin it names, and prints the resolved experiment. Trains nothing.
Exit status 0 when the experiment would start, 1 otherwise.
)";

const char* kPluginsHelp = R"(usage: tessera plugins [--plugin-path DIR]...
       tessera plugins inspect NAME [--plugin-path DIR]...

Lists every plugin found on the search path (name, kind, version, ABI, file), and the
libraries that failed to load with the reason. `inspect` prints one plugin's description
and every config key it accepts, with type, default and documentation.
)";

const char* kBenchHelp = R"(usage: tessera bench CONFIG [--backends fp32,bf16,...] [--out DIR] [--set section.key=value]...

Trains CONFIG once per precision backend (default: fp32, bf16, bf16_remainder, bf16_pure, fp16),
each in its own process, and prints a table: median step time and samples/s (first logging
window excluded as warm-up), model-state bytes/parameter, the run's peak resident memory,
final training loss and test accuracy. Writes DIR/bench.json (default DIR: runs/bench) and each
run's metrics and log under DIR/<backend>/. A backend that fails is reported with its error.
)";

const char* kLaunchHelp = R"(usage: tessera launch [--nproc N] [--nnodes M --node-rank K] [--master-addr HOST]
                      [--master-port P] -- ARGS...

Starts N processes of `tessera ARGS` on this machine, with RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set as torchrun sets them (so `torchrun` or a
cluster launcher can start the same program instead). On M machines, run it once per machine
with the same --nnodes, --master-addr (node 0's address) and --master-port, and --node-rank
0..M-1: RANK = K * N + LOCAL_RANK, WORLD_SIZE = M * N. Defaults: N = 1, M = 1, K = 0,
HOST = 127.0.0.1, P = a free port (required with M > 1). SIGINT/SIGTERM are forwarded to
every rank; when one rank fails, the others are stopped (SIGTERM, then SIGKILL after 10 s; at
once for a stopped, frozen rank) and the exit status is the failing rank's. Example:
  tessera launch --nproc 2 -- train configs/fashion_mnist.toml
)";

const char* kExportHelp = R"(usage: tessera export CHECKPOINT OUT.safetensors

Writes the model weights stored in CHECKPOINT (a checkpoint directory, as written by any
number of ranks) into one safetensors file: one tensor per parameter, by name, in its shape,
at the best precision the checkpoint holds (fp32 when the run kept an fp32 master).
)";

const char* kDataHelp = R"(usage: tessera data inspect CONFIG [--set section.key=value]... [--examples N] [--batches N]
                            [--out SHEET.png]

Opens the dataset CONFIG's [data] names and prints each split's size, every field's dtype and
shape, the dataset's metadata (class names, zero-shot prompts), the first N (default 3) examples
of the training split in their epoch-0 order (text fields decoded with the dataset's
tokenizer), writes a PNG contact sheet of up to 64 images when a field holds images (default
<output_dir>/contact_sheet.png), and times N (default 20) batches through the core's loader
with the configured [data] batch_size and workers.

`tessera data tokenize --help` describes turning text into llm.c token shards.
`tessera data speak --help` describes speaking Fashion-MNIST's captions into a cache.
)";

const char* kEvalHelp = R"(usage: tessera eval CONFIG --weights FILE [--set section.key=value]...

Builds the experiment CONFIG describes, loads the parameters and buffers of FILE (a
model.safetensors or a `tessera export`, any precision backend) and runs the evaluators of
[eval] on the evaluation split, in a process of its own: what the trained run reported.
)";

const char* kInitHelp = R"(usage: tessera init CONFIG --out FILE.safetensors [--set section.key=value]...

Builds the experiment CONFIG describes (its seed, its plugins' initialisation), without its
data, and writes the initial parameters and buffers as a model file in the same form as the
model.safetensors a run ends with (fp32, named <encoder>.<parameter>): the starting point of
a run, for a reference implementation to load.
)";

const char* kGenerateHelp = R"(usage: tessera generate RUN_OR_CHECKPOINT --prompt TEXT [options] [--set section.key=value]...

Samples a continuation of TEXT from a trained language model and prints the decoded text.
RUN_OR_CHECKPOINT is a run's output directory (its model.safetensors, else its latest
checkpoint), a checkpoint directory, or a model file; the model is rebuilt from the config
stored with the weights, and the prompt is encoded and the result decoded by its dataset's
tokenizer.

options:
  --prompt TEXT            the text to continue (required)
  --max-new-tokens N       tokens to generate (default 64)
  --temperature T          divide the logits by T before sampling; 0 = greedy (default 1.0)
  --top-k K                sample among the K most likely tokens only; 0 = all (default 0)
  --seed S                 the sampler's seed (default 0): the same seed gives the same text
  --context N              the model sees the last N tokens; default: its max_seq_len
  --input NAME             the tokens' batch tensor and tokenizer field (default input_ids)
  --output NAME            the (B, T, V) logits the model writes (default logits)
)";

struct Parsed {
  std::vector<std::string> positional;
  std::vector<std::string> sets;
  std::vector<std::string> plugin_paths;
  std::string backends, out, weights;
  int64_t examples = 3, batches = 20;
  std::optional<std::string> prompt;
  GenerateOptions gen;
  bool help = false;
};

// The value of a flag that takes a whole number, 0 or more; std::invalid_argument naming the flag.
int64_t count_value(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long long n = -1;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
  }
  if (n < 0 || used != v.size()) throw std::invalid_argument(flag + " expects a whole number, 0 or more, got '" + v + "'");
  return n;
}

// Throws std::invalid_argument for usage errors.
Parsed parse(const std::vector<std::string>& args, size_t from) {
  Parsed p;
  for (size_t i = from; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") p.help = true;
    else if (a == "--set") p.sets.push_back(value(a));
    else if (a.rfind("--set=", 0) == 0) p.sets.push_back(a.substr(6));
    else if (a == "--plugin-path") p.plugin_paths.push_back(value(a));
    else if (a == "--backends") p.backends = value(a);
    else if (a == "--out") p.out = value(a);
    else if (a == "--weights") p.weights = value(a);
    else if (a == "--prompt") p.prompt = value(a);
    else if (a == "--input") p.gen.input = value(a);
    else if (a == "--output") p.gen.output = value(a);
    else if (a == "--max-new-tokens" || a == "--top-k" || a == "--context" || a == "--seed") {
      const int64_t n = count_value(a, value(a));
      if (a == "--max-new-tokens") p.gen.max_new_tokens = n;
      else if (a == "--top-k") p.gen.top_k = n;
      else if (a == "--context") p.gen.context = n;
      else p.gen.seed = static_cast<uint64_t>(n);
    } else if (a == "--temperature") {
      const std::string v = value(a);
      size_t used = 0;
      double t = -1;
      try {
        t = std::stod(v, &used);
      } catch (const std::exception&) {
      }
      if (!(t >= 0) || used != v.size()) throw std::invalid_argument("--temperature expects a number, 0 or more, got '" + v + "'");
      p.gen.temperature = t;
    }
    else if (a == "--examples" || a == "--batches") (a == "--examples" ? p.examples : p.batches) = count_value(a, value(a));
    else if (a.rfind("--plugin-path=", 0) == 0) p.plugin_paths.push_back(a.substr(14));
    else if (!a.empty() && a[0] == '-') throw std::invalid_argument("unknown option " + a);
    else p.positional.push_back(a);
  }
  return p;
}

int cmd_train(const Parsed& p) {
  if (p.help) return std::cout << kTrainHelp, 0;
  if (p.positional.size() != 1) throw std::invalid_argument("train needs exactly one CONFIG");
  Config cfg = Config::load(p.positional[0], p.sets);
  setup_process(cfg);  // log level, threads: before anything logs or computes
  install_stop_signals();
  spdlog::info("config {} (resolved):\n{}", cfg.path(), cfg.dump());
  Experiment exp(cfg);
  spdlog::info("experiment:\n{}", exp.describe());
  TrainSummary s = exp.train();
  if (!exp.is_main_rank()) return 0;
  std::cout << std::fixed << std::setprecision(2) << "trained " << s.steps << " steps, " << s.epochs
            << " epochs in " << s.train_seconds << " s; final loss " << std::setprecision(4) << s.final_loss;
  if (s.eval_accuracy >= 0) std::cout << std::setprecision(2) << "; test accuracy " << 100.0 * s.eval_accuracy << "%";
  if (s.zero_shot_accuracy >= 0)
    std::cout << std::setprecision(2) << "; zero-shot accuracy " << 100.0 * s.zero_shot_accuracy << "%";
  if (s.zero_shot_audio_accuracy >= 0)
    std::cout << std::setprecision(2) << "; zero-shot audio accuracy " << 100.0 * s.zero_shot_audio_accuracy << "%";
  if (s.recall_at_1 >= 0) std::cout << std::setprecision(2) << "; retrieval R@1 " << 100.0 * s.recall_at_1 << "%";
  if (s.eval_loss >= 0) std::cout << std::setprecision(4) << "; eval loss " << s.eval_loss;
  if (s.perplexity >= 0) std::cout << std::setprecision(2) << " (perplexity " << s.perplexity << ")";
  std::cout << "\noutputs: " << s.output_dir << "\n";
  return 0;
}

int cmd_check(const Parsed& p) {
  if (p.help) return std::cout << kCheckHelp, 0;
  if (p.positional.size() != 1) throw std::invalid_argument("check needs exactly one CONFIG");
  Config cfg = Config::load(p.positional[0], p.sets);
  setup_process(cfg);
  Experiment exp(cfg, /*load_data=*/false);
  std::cout << cfg.path() << ": OK\n" << exp.describe();
  return 0;
}

PluginRegistry scan(const Parsed& p) {
  PluginRegistry reg;
  reg.scan(PluginRegistry::default_search_path(p.plugin_paths));
  return reg;
}

int cmd_plugins(const Parsed& p) {
  if (p.help) return std::cout << kPluginsHelp, 0;
  if (!p.positional.empty() && p.positional[0] == "inspect") {
    if (p.positional.size() != 2) throw std::invalid_argument("plugins inspect needs exactly one NAME");
    PluginRegistry reg = scan(p);
    for (const auto& lib : reg.plugins()) {
      if (lib->name() != p.positional[1]) continue;
      std::cout << lib->name() << " " << lib->version() << "\n"
                << "  kind:        " << lib->kind() << "\n"
                << "  ABI:         " << lib->abi_major() << "." << lib->abi_minor() << "\n"
                << "  LibTorch:    " << (lib->torch_version().empty() ? "not used" : lib->torch_version()) << "\n"
                << "  file:        " << lib->path() << "\n"
                << "  description: " << lib->description() << "\n"
                << "config keys (" << lib->schema().keys.size() << "):\n";
      for (const auto& k : lib->schema().keys) {
        std::cout << "  " << std::left << std::setw(18) << k.name << std::setw(18) << to_string(k.type)
                  << "default " << std::setw(14) << (k.default_toml ? *k.default_toml : std::string("(required)"));
        if (k.min_value <= k.max_value) std::cout << " range [" << k.min_value << ", " << k.max_value << "]";
        for (size_t i = 0; i < k.choices.size(); ++i) std::cout << (i ? " | " : " one of: ") << k.choices[i];
        std::cout << "\n      " << k.doc << "\n";
      }
      return 0;
    }
    std::vector<std::string> names;
    for (const auto& lib : reg.plugins()) names.push_back(lib->name());
    std::string msg = "no plugin named '" + p.positional[1] + "'";
    std::string near = nearest(p.positional[1], names);
    if (!near.empty()) msg += "; did you mean '" + near + "'?";
    throw PluginError(msg);
  }
  if (!p.positional.empty()) throw std::invalid_argument("unknown plugins subcommand '" + p.positional[0] + "'");
  PluginRegistry reg = scan(p);
  std::cout << std::left << std::setw(16) << "NAME" << std::setw(22) << "KIND" << std::setw(10) << "VERSION"
            << std::setw(6) << "ABI" << "PATH\n";
  for (const auto& lib : reg.plugins())
    std::cout << std::setw(16) << lib->name() << std::setw(22) << lib->kind() << std::setw(10) << lib->version()
              << std::setw(6) << (std::to_string(lib->abi_major()) + "." + std::to_string(lib->abi_minor()))
              << lib->path() << "\n";
  for (const auto& f : reg.failures()) std::cout << "not loaded: " << f.reason << "\n";
  if (reg.searched().empty()) std::cout << "(no plugin directory found; set TESSERA_PLUGIN_PATH)\n";
  return 0;
}

int cmd_bench(const Parsed& p) {
  if (p.help) return std::cout << kBenchHelp, 0;
  if (p.positional.size() != 1) throw std::invalid_argument("bench needs exactly one CONFIG");
  Config::load(p.positional[0], p.sets);  // fail early on a bad config or override
  BenchOptions o;
  o.config = p.positional[0];
  o.sets = p.sets;
  if (!p.backends.empty()) {
    o.backends.clear();
    std::stringstream ss(p.backends);
    for (std::string b; std::getline(ss, b, ',');)
      if (!b.empty()) o.backends.push_back(b);
  }
  if (!p.out.empty()) o.out_dir = p.out;
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

int cmd_launch(const std::vector<std::string>& args) {
  LaunchOptions o;
  bool port_given = false;
  size_t i = 2;
  for (; i < args.size() && args[i] != "--"; ++i) {
    std::string flag = args[i], inline_value;
    const bool has_inline = flag.rfind("--", 0) == 0 && flag.find('=') != std::string::npos;
    if (has_inline) inline_value = flag.substr(flag.find('=') + 1), flag.resize(flag.find('='));
    auto value = [&]() -> std::string {
      if (has_inline) return inline_value;
      if (i + 1 >= args.size() || args[i + 1] == "--") throw std::invalid_argument(flag + " needs a value");
      return args[++i];
    };
    if (flag == "-h" || flag == "--help") return std::cout << kLaunchHelp, 0;
    if (flag == "--nproc" || flag == "--nproc-per-node" || flag == "--nproc_per_node")
      o.nproc = launch_int(flag, value(), 1, 4096, "a number of processes per node, 1 or more");
    else if (flag == "--nnodes") o.nnodes = launch_int(flag, value(), 1, 1 << 16, "a number of nodes, 1 or more");
    else if (flag == "--node-rank" || flag == "--node_rank")
      o.node_rank = launch_int(flag, value(), 0, 1 << 16, "this node's index, 0 to --nnodes minus 1");
    else if (flag == "--master-port" || flag == "--master_port")
      o.master_port = launch_int(flag, value(), 1, 65535, "a TCP port number in 1..65535"), port_given = true;
    else if (flag == "--master-addr" || flag == "--master_addr") {
      o.master_addr = value();
      if (o.master_addr.empty() || o.master_addr.find_first_of(" \t/") != std::string::npos)
        throw std::invalid_argument(flag + " expects a host name or IP address, got '" + o.master_addr + "'");
    } else {
      throw std::invalid_argument("unknown launch option " + args[i]);
    }
  }
  if (o.node_rank >= o.nnodes)
    throw std::invalid_argument("--node-rank expects this node's index, 0 to --nnodes minus 1 (" +
                                std::to_string(o.nnodes - 1) + "), got " + std::to_string(o.node_rank));
  if (o.nnodes > 1 && !port_given)
    throw std::invalid_argument("--master-port is required with --nnodes > 1 (every node must name the same port)");
  if (i >= args.size() || i + 1 == args.size()) throw std::invalid_argument("launch needs -- followed by the rank's arguments");
  o.args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
  o.exe = std::filesystem::read_symlink("/proc/self/exe").string();
  return launch_ranks(o);
}

}  // namespace

int run_cli(const std::vector<std::string>& args) {
  try {
    if (args.size() < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help") {
      std::cout << kMainHelp;
      return args.size() < 2 ? 2 : 0;
    }
    const std::string& cmd = args[1];
    if (cmd == "--version") {
      std::cout << "tessera " << TESSERA_VERSION << " (plugin ABI " << TSR_ABI_MAJOR << "." << TSR_ABI_MINOR
                << ", LibTorch " << core_torch_version() << ")\n";
      return 0;
    }
    if (cmd == "launch") return cmd_launch(args);  // its own parsing: everything after -- is the rank's
    Parsed p = parse(args, 2);
    if (cmd == "train") return cmd_train(p);
    if (cmd == "check") return cmd_check(p);
    if (cmd == "plugins") return cmd_plugins(p);
    if (cmd == "bench") return cmd_bench(p);
    if (cmd == "eval") {
      if (p.help) return std::cout << kEvalHelp, 0;
      if (p.positional.size() != 1 || p.weights.empty()) throw std::invalid_argument("eval needs CONFIG and --weights FILE");
      Config cfg = Config::load(p.positional[0], p.sets);
      setup_process(cfg);
      Experiment exp(cfg);
      exp.load_weights(p.weights);
      const EvalResult r = exp.evaluate();
      std::cout << std::fixed << std::setprecision(2) << "evaluated " << p.weights << ":";
      if (r.accuracy >= 0) std::cout << " test accuracy " << 100.0 * r.accuracy << "%, test loss " << std::setprecision(4) << r.loss;
      if (r.zero_shot_accuracy >= 0) std::cout << std::setprecision(2) << "; zero-shot accuracy " << 100.0 * r.zero_shot_accuracy << "%";
      if (r.zero_shot_audio_accuracy >= 0)
        std::cout << std::setprecision(2) << "; zero-shot audio accuracy " << 100.0 * r.zero_shot_audio_accuracy << "%";
      if (r.recall_at_1 >= 0) std::cout << std::setprecision(2) << "; retrieval R@1 " << 100.0 * r.recall_at_1 << "%";
      std::cout << "\n";
      return 0;
    }
    if (cmd == "generate") {
      if (p.help) return std::cout << kGenerateHelp, 0;
      if (p.positional.size() != 1 || !p.prompt) throw std::invalid_argument("generate needs RUN_OR_CHECKPOINT and --prompt TEXT");
      // The text alone goes to stdout (for pipes); the log goes to stderr.
      spdlog::set_default_logger(spdlog::stderr_color_mt("tessera-generate"));
      GenerateOptions g = p.gen;
      g.source = p.positional[0];
      g.prompt = *p.prompt;
      g.sets = p.sets;
      generate(g, std::cout);
      return 0;
    }
    if (cmd == "init") {
      if (p.help) return std::cout << kInitHelp, 0;
      if (p.positional.size() != 1 || p.out.empty()) throw std::invalid_argument("init needs CONFIG and --out FILE");
      Config cfg = Config::load(p.positional[0], p.sets);
      setup_process(cfg);
      Experiment exp(cfg);  // with its flat buffers: the weights as training would start from them
      exp.save_model(p.out, 0);
      return 0;
    }
    if (cmd == "data") {
      if (p.help || p.positional.empty()) return std::cout << kDataHelp, p.help ? 0 : 2;
      if (p.positional[0] != "inspect")
        throw std::invalid_argument("unknown data subcommand '" + p.positional[0] + "' (inspect, tokenize, speak)");
      if (p.positional.size() != 2) throw std::invalid_argument("data inspect needs exactly one CONFIG");
      InspectOptions o;
      o.config = p.positional[1];
      o.sets = p.sets;
      o.examples = p.examples;
      o.batches = p.batches;
      o.sheet = p.out;
      inspect_data(o, std::cout);
      return 0;
    }
    if (cmd == "export") {
      if (p.help) return std::cout << kExportHelp, 0;
      if (p.positional.size() != 2) throw std::invalid_argument("export needs CHECKPOINT and OUT.safetensors");
      refuse_output_inside(p.positional[0], p.positional[1], "the checkpoint");
      const size_t n = export_checkpoint(p.positional[0], p.positional[1]);
      std::cout << "exported " << n << " tensors to " << p.positional[1] << "\n";
      return 0;
    }
    throw std::invalid_argument("unknown command '" + cmd + "'");
  } catch (const std::invalid_argument& e) {
    std::cerr << "error: " << e.what() << "\n(see tessera --help)\n";
    return 2;
  } catch (const Interrupted& e) {
    std::cerr << e.what() << "\n";
    return 128 + e.signal();
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tessera
