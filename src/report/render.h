// The reports of report.h rendered for people (aligned text tables, one self-contained HTML page
// with an SVG timeline) and for scripts (JSON). Pure functions of their input.
#pragma once

#include <string>
#include <vector>

#include "report/report.h"

namespace fanout::report {

// ---- All Executions ---------------------------------------------------------------------------

// A header line saying times are UTC, then one row per execution.
std::string ExecutionsText(const std::vector<ExecutionSummary>& executions, DateTime now);
// A JSON array of executions (keys as the catalog columns, times ISO 8601 UTC,
// duration_seconds, children).
std::string ExecutionsJson(const std::vector<ExecutionSummary>& executions, DateTime now);
// A self-contained page: `filters` is a line describing the query ("status failed, since ...").
std::string ExecutionsHtml(const std::vector<ExecutionSummary>& executions,
                           const std::string& filters, DateTime now);

// ---- Overview ---------------------------------------------------------------------------------

// The execution, its parameters (sensitive ones as ***), its tasks, its errors and the tree of
// its child executions.
std::string OverviewText(const Overview& overview);
// The same as one JSON object: execution (with parameters: name -> {value, sensitive}; the value
// of a sensitive one is null), tasks, errors, children (each with errors and children).
std::string OverviewJson(const Overview& overview);
// One self-contained page (inline CSS and SVG; no scripts, no external resources): the overview
// plus TimelineSvg.
std::string OverviewHtml(const Overview& overview);

// The Gantt chart of the execution's direct children: one row per agent ("local" for children
// run here, in or out of process), overlapping children stacked within their row, one
// <rect class="bar ..."> per child placed by its start and end, labelled with ChildLabel, under a
// time axis of offsets from the execution's start. "" when there are no children.
std::string TimelineSvg(const Overview& overview);

// Escapes &, <, >, " and ' for HTML text and attributes (and SVG).
std::string EscapeHtml(std::string_view text);

}  // namespace fanout::report
