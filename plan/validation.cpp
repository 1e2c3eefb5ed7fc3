// Published-run predictions and the efficiency fit (see plan/validation.h).
#include "plan/validation.h"

#include <cmath>

#include "plan/flops.h"
#include "plan/step_time.h"

namespace nibble::plan {

ValidationRow predict_published(const PublishedRun& run, const ClusterSpec& cluster, const Efficiency& efficiency) {
  const StepTime st = estimate_step_time(run.model, run.training, run.layout, cluster, efficiency);
  ValidationRow row;
  row.run = run;
  if (run.is_seconds) {
    row.predicted = st.total;
  } else {  // the paper's accounting: Eq. 3 with recomputation, per GPU and second
    row.predicted = narayanan_flops(run.model, run.training.global_batch, true) /
                    (st.total * static_cast<double>(run.layout.gpus())) / 1e12;
  }
  row.error = (row.predicted - run.published) / run.published;
  return row;
}

std::vector<ValidationRow> validate_published(const ClusterSpec& cluster, const Efficiency& efficiency) {
  std::vector<ValidationRow> rows;
  for (const PublishedRun& run : all_published_runs()) rows.push_back(predict_published(run, cluster, efficiency));
  return rows;
}

double worst_abs_error(const std::vector<ValidationRow>& rows) {
  double worst = 0;
  for (const ValidationRow& r : rows) worst = std::max(worst, std::abs(r.error));
  return worst;
}

Efficiency fit_efficiency(const ClusterSpec& cluster) {
  Efficiency best{};
  double best_error = 1e300;
  for (int g = 50; g <= 95; ++g)
    for (int hb = 40; hb <= 100; hb += 5)
      for (int n = 50; n <= 100; n += 5) {
        const Efficiency e{g / 100.0, hb / 100.0, n / 100.0};
        const double err = worst_abs_error(validate_published(cluster, e));
        if (err < best_error) best_error = err, best = e;
      }
  return best;
}

}  // namespace nibble::plan
