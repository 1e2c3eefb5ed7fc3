#pragma once
// Text the nibble-plan command prints: the ranked layout table, the best layout's memory and time breakdowns,
// and the validation table (markdown, as docs/PLAN.md carries it).
#include <string>
#include <vector>

#include "plan/cluster.h"
#include "plan/efficiency.h"
#include "plan/layout_search.h"
#include "plan/validation.h"

namespace nibble::plan {

std::string layout_table(const std::vector<RankedLayout>& ranked, size_t top);
std::string memory_breakdown_text(const MemoryBreakdown& memory);
std::string step_breakdown_text(const StepTime& time);
std::string validation_table(const std::vector<ValidationRow>& rows);
std::string efficiency_text(const Efficiency& efficiency);

}  // namespace nibble::plan
