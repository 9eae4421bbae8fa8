// `nibble plan MODEL --target-bpw 4.5 | --max-size 3.8GB | --gpu 24GB`:
// chooses one target per tensor so that the checkpoint convert writes fits a
// budget with the least total error, and writes that choice as a config file
// `nibble convert --config` reads.
//
// One streaming pass over the weights (checkpoint order, each tensor read
// once) measures every candidate target of every candidate tensor with the
// fused kernels (measure.h: the figures convert's --report gives). The
// choice is a multiple-choice knapsack (SolveKnapsack below): minimise the
// sum over tensors of the squared error (MSE x parameters) subject to the
// bytes of tensor data. The config names every tensor it decides with an
// exact-name rule; building convert's plan from it is checked before it is
// written, so `convert --config` then writes exactly the predicted bytes
// and reports exactly the predicted errors. CLI11 is only used by
// AddPlanCommand.
#ifndef NIBBLE_TOOLS_NIBBLE_PLAN_CMD_H_
#define NIBBLE_TOOLS_NIBBLE_PLAN_CMD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace nibble::tool {

struct PlanOptions {
  std::string input;
  // The budget: exactly one of the three.
  std::string target_bpw;          // decimal text ("4.5"), parsed exactly
  std::string max_size;            // "3.8GB"
  std::string gpu;                 // "24GB"
  std::optional<int64_t> context;  // --gpu only: KV-cache tokens
  std::optional<int64_t> batch;    // --gpu only: KV-cache sequences
  std::string output;     // the config to write; '-': stdout; empty: none
  std::string json_path;  // '-': stdout
  std::string config;     // user rules that pin tensors
  std::vector<std::string> keep;
  std::vector<std::string> tensor_type;
  bool split_fused = false;             // let q/k/v and gate/up differ
  int64_t dp_cells = int64_t{1} << 24;  // SolveKnapsack's max_cells
  int threads = 0;                      // 0: all cores
  std::string isa;                      // empty: the global --isa
  int top = 20;                         // table rows
  bool quiet = false;
};

// Adds the `plan` subcommand to `app`; options are stored in *o.
CLI::App* AddPlanCommand(CLI::App* app, PlanOptions* o);

// Runs it. Returns the exit code (0 ok, 1 usage or a budget that cannot be
// met, 2 bad input, 3 I/O, 4 internal); on failure *error is the one-line
// message. The config and --json files are checked for writing before the
// checkpoint is read and written (temporary name, then rename) only when
// everything succeeded.
int RunPlanCommand(const PlanOptions& o, const std::string& global_isa,
                   std::string* error);

// ---------------------------------------------------------------------------
// The solver, independent of checkpoints.

// One way to store a group of tensors: its bytes and its error.
struct KnapsackOption {
  int64_t bytes = 0;  // >= 0
  double error = 0;   // >= 0, finite
};

// Pick exactly one option per group.
struct KnapsackGroup {
  std::vector<KnapsackOption> options;  // at least one
};

struct KnapsackResult {
  bool feasible = false;    // the smallest options fit the capacity
  int64_t min_bytes = 0;    // sum of each group's smallest option
  std::vector<int> choice;  // per group: an index into its options
  int64_t bytes = 0;        // of the choice
  double error = 0;         // of the choice, summed in group order
  // How the choice was found: "independent" (the capacity holds every
  // group's least-error option), "dp" (exact dynamic programme), "dp+fixup"
  // (the greedy fix-up improved the rounded programme's choice), "seed N"
  // (seed N was better than the programme's choice).
  std::string method;
  int64_t granularity = 0;  // bytes per DP cell (0: no DP run)
  int64_t cells = 0;        // DP columns (capacity / granularity + 1)
  bool exact = false;       // the choice is a proven optimum
  double lower_bound = 0;   // LP relaxation: no choice has less error
};

// The most cells (groups x DP columns) the dynamic programme may use by
// default; one byte each for the choices, plus two rows of doubles.
inline constexpr int64_t kKnapsackMaxCells = int64_t{1} << 24;
// The most --dp-cells accepts (256 MiB of choices).
inline constexpr int64_t kKnapsackMaxCellsLimit = int64_t{1} << 28;

// Minimises the total error subject to total bytes <= capacity.
//
// Each group's options are taken relative to its smallest one; the extra
// bytes are counted in units of g = the greatest common divisor of every
// extra (often thousands of bytes: row counts times scale widths), or a
// multiple of it when groups x (capacity / g + 1) would pass max_cells. A
// dynamic programme over (group, units used) then finds the least error.
// Extras are rounded UP to whole units and the units available rounded
// DOWN, so every choice it returns fits the real capacity; with the plain
// gcd no rounding happens and the result is optimal (exact = true). With a
// coarser unit, a greedy fix-up then spends the bytes the rounding left:
// while some single group can move to an option with less error within the
// real capacity, the move with the largest decrease is taken (ties: lowest
// group, then lowest option). Finally each seed (one option index per group,
// e.g. a uniform scheme) that fits and has strictly less error replaces the
// result, so the result is never worse than any seed that fits.
//
// Ties: options of a group are tried in order of (bytes, then index) and
// only a strictly smaller error replaces a choice, so of equal-error
// options the smallest (then the first) wins. Everything is deterministic:
// no threads, a fixed summation order. lower_bound is the optimum of the
// LP relaxation (per-group lower convex hulls, filled greedily by error
// decrease per byte): error - lower_bound bounds how far from optimal the
// result can be.
KnapsackResult SolveKnapsack(const std::vector<KnapsackGroup>& groups,
                             int64_t capacity,
                             const std::vector<std::vector<int>>& seeds = {},
                             int64_t max_cells = kKnapsackMaxCells);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_PLAN_CMD_H_
