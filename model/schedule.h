// Learning-rate schedules, with the semantics of Hugging Face `get_scheduler` so that runs are
// comparable with the REMIX code (which trains with the HF Trainer):
//   warmup_steps = ceil(warmup_ratio * total_steps)
//   step < warmup_steps:  lr = base * step / warmup_steps       (so the very first step has lr 0)
//   then, with progress p = (step - warmup) / max(1, total - warmup):
//     constant: base
//     linear:   base * max(0, 1 - p)
//     cosine:   base * max(0, 0.5 * (1 + cos(pi * p)))
// `step` is the 0-based index of the optimizer step about to be taken.
#pragma once
#include <cstdint>
#include <string>

enum class ScheduleKind { constant, cosine, linear };

ScheduleKind parse_schedule_kind(const std::string& name);  // throws naming the value
const char* schedule_kind_name(ScheduleKind k);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::cosine;
  double base_lr = 5e-5;
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;

  static LrSchedule make(ScheduleKind kind, double base_lr, int64_t total_steps, double warmup_ratio);
  double lr_at(int64_t step) const;
};
