#include "model/schedule.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "linear") return ScheduleKind::linear;
  fail("--schedule: unknown schedule '", name, "' (expected constant, cosine or linear)");
}

const char* schedule_kind_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::linear: return "linear";
  }
  return "?";
}

LrSchedule LrSchedule::make(ScheduleKind kind, double base_lr, int64_t total_steps, double warmup_ratio) {
  check(total_steps > 0, "lr schedule: total steps must be positive, got ", total_steps);
  check(warmup_ratio >= 0 && warmup_ratio <= 1, "--warmup-ratio: must be in [0, 1], got ", warmup_ratio);
  LrSchedule s;
  s.kind = kind;
  s.base_lr = base_lr;
  s.total_steps = total_steps;
  // Exactly HF TrainingArguments.get_warmup_steps: math.ceil(num_training_steps * warmup_ratio),
  // in double precision like Python.
  s.warmup_steps = int64_t(std::ceil(double(total_steps) * warmup_ratio));
  return s;
}

double LrSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps) return base_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (kind) {
    case ScheduleKind::constant: return base_lr;
    case ScheduleKind::linear: return base_lr * std::max(0.0, 1.0 - progress);
    case ScheduleKind::cosine: return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return base_lr;
}
