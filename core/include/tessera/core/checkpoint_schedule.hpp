// tessera/core/checkpoint_schedule.hpp — CheckpointSchedule: when the training loop saves a
// checkpoint ([checkpoint] every_steps, and at the end of the run).
#pragma once
#include <cstdint>

namespace tessera {

class CheckpointSchedule {
 public:
  enum class When { Never, Now, AfterEval };
  explicit CheckpointSchedule(int64_t every_steps) : every_(every_steps) {}
  // After an applied step. `done`: it was the run's last; `epoch_end`: the epoch's last. A
  // checkpoint at an epoch's end waits for the evaluation, so that a resumed run starts
  // cleanly at the next epoch.
  When after_step(int64_t step, bool done, bool epoch_end) const {
    if (every_ <= 0 || (step % every_ != 0 && !done)) return When::Never;
    return epoch_end ? When::AfterEval : When::Now;
  }

 private:
  int64_t every_;
};

}  // namespace tessera
