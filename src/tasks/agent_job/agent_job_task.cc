// The `agent-job` task (SSIS Execute SQL Server Agent Job task, done right): starts a job on an
// agent, or on the least loaded agent of a pool with a free slot, and — with `wait: true`, the
// default — ends with the child's real result. `wait: false` keeps the SSIS meaning: success
// once an agent accepted the start (queued there when every agent is full), failure when the
// job is already at its max_concurrent_runs on every agent.
//
// Every start carries the idempotency key EXECUTION:TASK_PATH:ATTEMPT, so a start whose answer
// was lost is retried without starting the job twice, and a retry after a lost agent is a new
// attempt that may go elsewhere.
#include "tasks/agent_job/agent_job_task.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "client/agent_pool.h"
#include "common/param_json.h"
#include "common/util.h"
#include "fanout/catalog.h"
#include "fanout/engine.h"

namespace fanout {
namespace {

using client::AgentPool;
using client::Lease;
using nlohmann::json;
using namespace std::chrono_literals;

// Long-polls are short, and a cancel cuts the one under way short (CancelToken::OnCancel); a lost
// agent is seen when the connection breaks (then given kComeBackWait), or after the wait plus
// this read margin when it falls silent (< 10 s either way).
constexpr auto kPollWait = std::chrono::seconds(1);
constexpr auto kReadMargin = 3000ms;
constexpr auto kStopWait = std::chrono::seconds(15);  // for a stopped child to report canceled
constexpr auto kStopRetryPause = 300ms;  // between stops an agent did not answer
// An agent whose connection is refused or broken (its process died) may be restarting: a
// restarted agent re-attaches to its runs, so the run is followed on if the agent is back
// within this time, rather than started again elsewhere while it also goes on there.
constexpr auto kComeBackWait = client::kAgentComeBackWait;
// A child whose job is at its max_concurrent_runs on every agent tries again after these
// pauses (doubling): the other runs' ends are not announced to this parent.
constexpr std::chrono::milliseconds kAtLimitFirstPause = 50ms;
constexpr std::chrono::milliseconds kAtLimitMaxPause = 1000ms;
constexpr auto kAtLimitSayAgain = std::chrono::seconds(60);
// After how long unfollowed an agent stops a child (`orphan_timeout`): well past the time a
// parent waits for a lost agent (kComeBackWait), so the parent has given the child up by then.
constexpr std::chrono::milliseconds kDefaultOrphanTimeout = 30s;
static_assert(kDefaultOrphanTimeout > 4 * kComeBackWait);
// Less could stop a child its parent still follows: a parent waits up to kComeBackWait for an
// agent that refuses connections (a proxy's blip, say) and a poll's wait and read margin for a
// silent one, sending no poll the agent sees meanwhile (review).
constexpr std::chrono::seconds kMinOrphanTimeout{10};
static_assert(kMinOrphanTimeout >= kComeBackWait + kPollWait + kReadMargin);

// Past durations of agent jobs, read from the catalog once per job and process.
class DurationHistory {
 public:
  static DurationHistory& Get() {
    static DurationHistory* history = new DurationHistory();  // used until exit
    return *history;
  }

  // The newest past duration of `job` run with (at least) these parameter values.
  std::optional<double> Expected(const std::string& catalog_spec, const std::string& job,
                                 const std::map<std::string, json>& params) {
    std::lock_guard lock(mu_);
    auto& runs = cache_[catalog_spec + "\n" + job];
    if (!runs) {
      runs = std::make_shared<std::vector<ExecutionRow>>();
      auto catalog = OpenCatalog(catalog_spec);
      if (catalog.ok()) {
        auto rows = (*catalog)->ListJobExecutions(job, 2000);
        if (rows.ok()) *runs = std::move(*rows);
      }
    }
    for (const ExecutionRow& row : *runs) {
      if (!row.ended_at) continue;
      bool same = std::all_of(params.begin(), params.end(), [&](const auto& p) {
        auto it = row.parameters.find(p.first);
        std::string want = p.second.is_string() ? p.second.template get<std::string>() : p.second.dump();
        return it != row.parameters.end() && !it->second.sensitive && it->second.value == want;
      });
      if (same) return std::chrono::duration<double>(*row.ended_at - row.started_at).count();
    }
    return std::nullopt;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::vector<ExecutionRow>>> cache_;
};

// `call` (a request through the lease's client), made again once when the agent refused the
// token and the member's token file now holds another: the agent restarted with a new token, or
// it was rotated, while the child ran.
template <typename Call>
auto WithFreshToken(AgentPool& pool, Lease& lease, Call call) {
  auto result = call();
  if (!result.ok() && result.status().code() == Code::kUnauthenticated &&
      pool.RefreshToken(lease)) {
    result = call();
  }
  return result;
}

// While the returned callback lives, a cancel of the task ends the lease's request under way.
CancelToken::Callback InterruptOnCancel(TaskContext& context, Lease& lease) {
  return context.cancel().OnCancel([&lease] { lease.client().Interrupt(); });
}

// Says the members the pool's probes found unusable since the last call, from whichever task
// of the pool comes first: one placing a child, or one following its child (QA: an agent lost
// while the only children were running elsewhere was never said).
void SayDownNotices(TaskContext& context, AgentPool& pool) {
  const bool others = pool.members().size() > 1;
  for (const auto& [agent, why] : pool.TakeDownNotices()) {
    context.Emit(EventType::kOnWarning,
                 fmt::format("agent {} is unusable{}: {}", agent,
                             others ? ", so children go to the pool's other agents" : "", why));
  }
}

class AgentJobTask : public Task {
 public:
  std::string connection;
  Template job;
  std::map<std::string, Template> params;
  bool wait = true;
  std::chrono::milliseconds orphan_timeout{0};  // with `wait` only; 0: never

  explicit AgentJobTask(Template j) : job(std::move(j)) {}

  TaskOutcome Execute(TaskContext& context) const override {
    // A retry goes to another agent than the one its last attempt failed on, when another can
    // take it (QA: an agent that failed every child at once looked the least loaded, and drew
    // each child's every retry).
    return Place(context, context.failed_agent());
  }

 private:
  // Places the child on an agent (passing over `failed_on`, a member's name, while another can
  // take it), starts it and, with `wait`, follows it to its end.
  TaskOutcome Place(TaskContext& context, const std::string& failed_on) const {
    auto job_name = job.RenderString(context.scope());
    if (!job_name.ok()) return TaskOutcome::Failure(job_name.status().message());
    // Checked here, not by an agent's answer: no agent is asked (QA: it read as an agent's
    // refusal of a name it never saw).
    if (!IsValidName(*job_name)) {
      return TaskOutcome::Failure(fmt::format(
          "`job` renders to '{}', which is not a job name: names match {}", *job_name,
          kNameRule));
    }
    client::StartRequest start;
    std::vector<std::string> secrets = context.engine().recorder().masker().secrets();
    for (const auto& [name, t] : params) {
      auto v = t.Render(context.scope());
      Result<json> sent = v.ok() ? ParamToJson(*v) : Result<json>(v.status());
      if (!sent.ok()) {
        return TaskOutcome::Failure(fmt::format("param {}: {}", name, sent.status().message()));
      }
      start.params[name] = std::move(*sent);
      std::vector<std::string> texts;
      ForEachScalar(start.params[name],
                    [&](const json&, const std::string& text) { texts.push_back(text); });
      // The run's secrets that a value holds go along: the agent then keeps them out of its
      // history and answers, and its child masks them. Other secrets stay here.
      for (auto it = secrets.begin(); it != secrets.end();) {
        bool held = std::any_of(texts.begin(), texts.end(), [&](const std::string& text) {
          return text.find(*it) != std::string::npos;
        });
        if (held) {
          start.secrets.push_back(*it);
          it = secrets.erase(it);
        } else {
          ++it;
        }
      }
    }
    start.parent_execution_id = context.execution_id();
    const std::string attempt_key =
        fmt::format("{}:{}:{}", context.execution_id(), context.task_path(), context.attempt());
    start.idempotency_key = attempt_key;
    start.orphan_timeout = orphan_timeout;
    int lost_starts = 0;  // starts whose answers were lost: each next start gets a key of its own

    AgentPool::Request request;
    request.job = *job_name;
    request.order = context.start_order();
    request.queue_when_full = !wait;
    // Before the pool is made: its first probe then begins once the past durations are read,
    // and the children that waited for that read (released in no order) find the pool not
    // ready yet, so they wait in it and are placed in order, not as they came.
    if (!context.run_options().catalog_unreachable) {
      request.expected_seconds = DurationHistory::Get().Expected(
          context.run_options().catalog_spec, *job_name, start.params);
    }
    auto members = Members(context);
    if (!members.ok()) return TaskOutcome::Failure(members.status().message());
    for (size_t i = 0; i < members->size(); ++i) {
      if ((*members)[i].name != failed_on) continue;
      request.failed_on = static_cast<int>(i);
      request.failed_why = "the child's last attempt failed there";
    }
    std::shared_ptr<AgentPool> pool = AgentPool::Get(*members);
    auto canceled = [&] { return context.cancel().canceled(); };

    // Place the child: the least loaded agent with a free slot that accepts it.
    Lease lease;
    client::StartResult started;
    const bool pool_of_several = members->size() > 1;
    // Agents that answered 409 (the job at its max_concurrent_runs there, with runs of other
    // parents or started by hand): tried again once a run may have ended. Each said once.
    std::set<int> at_limit;
    std::set<int> at_limit_said;
    auto retry_pause = kAtLimitFirstPause;
    // When the wait began, and when to say it again: a run held by hand (or stuck) keeps the
    // child waiting as long as it lasts, and the log shows the wait going on.
    std::optional<std::chrono::steady_clock::time_point> waiting_since;
    auto poll_started = std::chrono::steady_clock::now();  // of the start that placed the child
    auto next_said = std::chrono::steady_clock::time_point::min();
    while (true) {
      auto acquired = pool->Acquire(request, canceled);
      if (!acquired.ok() && acquired.status().code() == Code::kCanceled) {
        return {TaskResult::kCanceled, acquired.status().message(), "", ""};
      }
      const bool one_answers = std::any_of(at_limit.begin(), at_limit.end(),
                                           [&](int member) { return pool->IsAlive(member); });
      // Without waiting for the child, its start is refused, as SQL Server Agent refuses the
      // start of a job already running (the failure names each agent's answer).
      if (!acquired.ok() && one_answers && wait) {
        // Every agent left is full of this job: wait, as for a free slot, rather than fail the
        // attempt at once (two parents sharing a job whose limit is the agents' slots failed
        // most of their children, their retries spent within milliseconds).
        const auto now = std::chrono::steady_clock::now();
        if (!waiting_since) waiting_since = now;
        if (now >= next_said) {
          next_said = now + kAtLimitSayAgain;
          const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - *waiting_since);
          context.Emit(EventType::kOnInformation,
                       fmt::format("job {} is at its max_concurrent_runs on every agent that has "
                                   "it; waiting for one of its runs to end{}",
                                   *job_name, waited.count() > 0
                                                  ? fmt::format(" (for {} s now)", waited.count())
                                                  : ""));
        }
        if (!context.cancel().SleepFor(retry_pause)) {
          return {TaskResult::kCanceled, "canceled while waiting for a run of job " + *job_name +
                                             " to end on an agent", "", ""};
        }
        retry_pause = std::min(retry_pause * 2, kAtLimitMaxPause);
        for (int member : at_limit) request.exclude.erase(member);
        at_limit.clear();
        continue;
      }
      if (!acquired.ok()) return TaskOutcome::Failure(acquired.status().message());
      lease = std::move(*acquired);
      SayDownNotices(context, *pool);
      // Waiting for the child, the start also brings the run's first long-poll; the start is
      // said (and where the child runs recorded) as soon as the agent accepts it.
      const std::optional<std::chrono::seconds> first_poll =
          wait ? std::optional(kPollWait) : std::nullopt;
      // Once the start is accepted, a cancel cuts the wait after it short (Follow then stops the
      // run); before, it would make the start's fate unknown.
      CancelToken::Callback cut_wait;
      auto accepted = [&](const client::StartResult& run) {
        context.Emit(EventType::kOnInformation,
                     fmt::format("job {} {} on agent {} as run {}", *job_name,
                                 run.existing ? "was already started" : "started",
                                 lease.agent_name(), run.run_id));
        if (!wait) return;
        context.RecordWhereItRuns(lease.agent_name(), "");
        cut_wait = InterruptOnCancel(context, lease);
      };
      poll_started = std::chrono::steady_clock::now();
      bool may_have_started = false;  // a send of this key may have reached the agent
      auto start_it = [&] {
        auto sent = lease.client().StartJob(*job_name, start, first_poll, accepted);
        if (!sent.ok() && sent.status().code() == Code::kUnavailable &&
            lease.client().LastRequestMayHaveArrived()) {
          may_have_started = true;
        }
        return sent;
      };
      auto result = WithFreshToken(*pool, lease, start_it);
      // Once canceled, nothing is started any more: what a start sent before may have begun is
      // stopped below.
      // Each silent try waits out its whole read timeout (5 s): an agent that is silent (frozen)
      // is asked once, not three times (QA: 14 s before the child went elsewhere). A start
      // refused or cut before that (a slow agent that then died) is tried again as before.
      auto silent = [&] {
        return std::chrono::steady_clock::now() - poll_started >= kPollWait + kReadMargin;
      };
      if (!result.ok() && result.status().code() == Code::kUnavailable && !canceled() &&
          !silent()) {
        // The answer may be lost rather than the request: the same key cannot start twice.
        poll_started = std::chrono::steady_clock::now();
        result = start_it();
      }
      if (!result.ok() && result.status().code() == Code::kUnavailable && may_have_started &&
          !canceled() && pool->IsAlive(lease.member())) {
        // An agent may answer other requests while the answers to its starts are lost (cut by
        // a proxy, say): the run the key began there is followed, not started again elsewhere.
        // One its probes found silent too is not asked: what it may have started is stopped
        // once it answers (StopStartWhenBack, below).
        auto found = WithFreshToken(*pool, lease, [&] {
          return lease.client().FindRunByKey(start.idempotency_key);
        });
        if (found.ok() && !found->empty()) {
          client::StartResult adopted;
          adopted.run_id = *found;
          adopted.existing = true;
          accepted(adopted);
          poll_started = std::chrono::steady_clock::now();
          result = std::move(adopted);
        }
      }
      // Refused or broken at once, the agent's process is gone, and it may be restarting: one
      // back within kComeBackWait re-attaches the run the start may have begun, and answers the
      // same key with it. When no other agent could take the child, the start is sent again
      // until then rather than the attempt failed (the agent dies within the start's answer
      // window, before the parent knows the run, as likely as later).
      const auto gone = std::chrono::steady_clock::now();
      bool waiting_said = false;
      while (!result.ok() && result.status().code() == Code::kUnavailable && !canceled() &&
             !silent() &&
             std::chrono::steady_clock::now() - gone < kComeBackWait &&
             !pool->AnotherCanTake(lease.member(), request)) {
        if (!waiting_said) {
          waiting_said = true;
          context.Emit(EventType::kOnWarning,
                       fmt::format("agent {} stopped answering the start of job {}; sending it "
                                   "again for up to {} s, as no other agent can take the child: "
                                   "{}", lease.agent_name(), *job_name, kComeBackWait.count(),
                                   result.status().message()));
        }
        if (!context.cancel().SleepFor(kStopRetryPause)) break;
        poll_started = std::chrono::steady_clock::now();
        result = WithFreshToken(*pool, lease, start_it);
      }
      cut_wait = CancelToken::Callback();
      if (result.ok()) {
        started = *result;
        break;
      }
      const Status& st = result.status();
      int member = lease.member();
      std::string agent = lease.agent_name();
      // Whether "trying another" is true (QA: said when no other agent answered).
      const bool another = pool->AnotherCanTake(member, request);
      if (st.code() == Code::kUnavailable) {
        pool->MarkDown(member, st.message());
        const char* stopped_later = "";
        if (may_have_started) {
          // The request may have got there and only the answers been lost: whatever it started
          // is stopped once the agent answers (or before this process exits), as the child
          // goes elsewhere or the parent ends.
          pool->StopStartWhenBack(member, *job_name, start.idempotency_key);
          // A new key for the next start, which may be on this agent again once it is back.
          start.idempotency_key = fmt::format("{}#{}", attempt_key, ++lost_starts);
          stopped_later = " (a run it may have started is stopped when it answers)";
        }
        pool->Release(lease, AgentPool::Ending::kNotStarted);
        if (canceled()) {
          return {TaskResult::kCanceled,
                  fmt::format("canceled while starting job {} on agent {}, which did not "
                              "answer{}: {}", *job_name, agent, stopped_later, st.message()),
                  "", agent};
        }
        context.Emit(EventType::kOnWarning,
                     fmt::format("agent {} is unavailable{}{}: {}", agent,
                                 another ? ", trying another" : "", stopped_later,
                                 st.message()));
        continue;
      }
      // A job missing on an agent (not deployed there) is said once, not by every child: the
      // pool passes that agent over for this job for a while (QA: 590 warnings for 300 children
      // over two agents without it). Marked before the slot is released, which wakes waiters.
      // Marked on a lone agent too, for its line in the run's summary (QA: it had none).
      const bool missing = st.code() == Code::kNotFound;
      const bool say_missing = missing && pool->MarkJobMissing(member, *job_name, st.message());
      pool->Release(lease, AgentPool::Ending::kNotStarted);
      if (st.code() == Code::kFailedPrecondition) {  // 409: full of this job, for now
        at_limit.insert(member);
        request.exclude[member] = st.message();
        if ((another || wait) && at_limit_said.insert(member).second) {
          context.Emit(EventType::kOnWarning,
                       fmt::format("agent {} refused job {}, trying {}: {}", agent, *job_name,
                                   another ? "another" : "again once a run ends",
                                   st.message()));
        }
        continue;
      }
      // A job that agent lacks, a refused token, or 500: the agent answers but cannot work for
      // this parent (a full disk, a rotated token). The child tries another agent.
      const bool failed = st.code() == Code::kInternal;
      const bool refused_token = st.code() == Code::kUnauthenticated;
      if (pool_of_several && (failed || refused_token || st.code() == Code::kNotFound)) {
        // Idle, a failing agent would look the least loaded and draw every child and retry: it
        // is also out of the pool until its next probe (a second later; the probe only reads
        // its status, and its token file again).
        if (failed || refused_token) pool->MarkDown(member, st.message());
        request.exclude[member] = st.message();
        if (!missing || say_missing) {
          context.Emit(EventType::kOnWarning,
                       fmt::format("agent {} {} job {}, {}: {}", agent,
                                   failed ? "could not start" : "refused", *job_name,
                                   !another ? "and no other agent of the pool can take it now"
                                   : missing ? "so children of it go to the pool's other agents"
                                             : "trying another",
                                   st.message()));
        }
        continue;
      }
      // QA: a lone agent failing every start (a full disk) read as healthy in the summary.
      if (failed || refused_token) pool->NoteUnusable(member, st.message());
      return {TaskResult::kFailure,
              fmt::format("cannot start job {} on agent {}: {}", *job_name, agent, st.message()),
              "", agent};
    }
    std::string agent = lease.agent_name();
    if (!wait) {
      pool->Detach(lease, started.run_id);
      return {TaskResult::kSuccess, "", "", agent};
    }
    return Follow(context, *pool, lease, *job_name, started.run_id, agent,
                  std::move(started.first_poll), poll_started);
  }

  // Long-polls the run until it ends, the agent is lost, or the parent cancels. `first_poll`:
  // what a first long-poll that came with the start got, which began at `poll_started`.
  TaskOutcome Follow(TaskContext& context, AgentPool& pool, Lease& lease, const std::string& job_name,
                     const std::string& run_id, const std::string& agent,
                     std::optional<Result<json>> first_poll,
                     std::chrono::steady_clock::time_point poll_started) const {
    bool stopping = false;
    bool stop_sent = false;  // the agent took the stop (sent again if it stops answering)
    bool stop_taken = false;  // ... and said so (rather than refusing it for good: a 404)
    bool stop_token_refused = false;  // the last stop was refused the token (401)
    bool stop_warned = false;
    auto stop_deadline = std::chrono::steady_clock::now();
    // The execution of the run's package step, once seen: kept even if the agent is lost later,
    // so the catalog ties a lost attempt to the child that ran.
    std::string child;
    // `poll_started`, when the last long-poll began: a cancel came after it, and a poll an agent
    // does not answer holds it for its whole read timeout. The stop wait counts from there.
    // Since when the agent refuses or breaks connections (its process gone); min(): it answers.
    constexpr auto kAnswers = std::chrono::steady_clock::time_point::min();
    // When the agent last answered for the run (its start, just before): a lost run's busy time
    // ends there, not when it was given up.
    auto answered_at = std::chrono::steady_clock::now();
    auto gone_since = kAnswers;
    bool token_refused_said = false;  // the gone period is (now) one of a refused token
    // A token from the environment cannot change while the parent runs: no wait for a new one.
    const bool token_may_change =
        !pool.members()[static_cast<size_t>(lease.member())].token_file.empty();
    // The agent took a stop, then was heard no more: it ends the run canceled, unseen.
    auto ended_unseen = [&](const std::string& why) -> TaskOutcome {
      pool.Release(lease, AgentPool::Ending::kCanceled);
      return {TaskResult::kCanceled,
              fmt::format("run {} on agent {} took the stop; its end was not seen{}", run_id,
                          agent, why.empty() ? "" : ": " + why),
              child, agent};
    };
    while (true) {
      if (context.cancel().canceled() && !stop_sent) {
        if (!stopping) {
          stopping = true;
          stop_deadline = poll_started + kStopWait;
        }
        // An agent that does not answer now (frozen, restarting) is asked again until the stop
        // wait runs out: given up at once, its run went on to the end.
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            stop_deadline - std::chrono::steady_clock::now());
        auto stopped = WithFreshToken(pool, lease, [&] {
          return lease.client().StopRun(run_id,
                                        std::max<std::chrono::milliseconds>(left, kStopRetryPause));
        });
        // Silence is retried, and a refused token (a rotation under way) for kComeBackWait: an
        // answer that refuses otherwise (404) will not change.
        const Code stop_code = stopped.ok() ? Code::kOk : stopped.status().code();
        // Once taken, the agent keeps the stop, across its restart too.
        stop_taken = stop_taken || stopped.ok();
        stop_token_refused = stop_code == Code::kUnauthenticated;
        stop_sent = stop_code != Code::kUnavailable && !stop_token_refused;
        // Taken after all (the agent is back): the run gets the whole wait to end canceled.
        if (stop_sent) stop_deadline = std::max(stop_deadline, poll_started + kStopWait);
        if (stop_token_refused) {
          if (gone_since == kAnswers) gone_since = std::chrono::steady_clock::now();
          token_refused_said = true;
          // A token from the environment will not change: no wait for it.
          stop_deadline = token_may_change
                              ? std::min(stop_deadline, gone_since + kComeBackWait)
                              : std::chrono::steady_clock::now();
        }
        if (!stop_sent && !lease.client().LastRequestMayHaveArrived()) {
          // Refused: the agent's process is gone. Back within kComeBackWait, it re-attaches the
          // run and takes the stop; later, the stop is left to the pool (StopWhenBack).
          if (gone_since == kAnswers) gone_since = std::chrono::steady_clock::now();
          stop_deadline = std::min(stop_deadline, gone_since + kComeBackWait);
        }
        if (!stopped.ok() && !stop_warned) {
          stop_warned = true;
          context.Emit(EventType::kOnWarning,
                       fmt::format("could not stop run {} on agent {} yet, trying for up to {} s "
                                   "more: {}", run_id, agent,
                                   std::chrono::ceil<std::chrono::seconds>(
                                       stop_deadline - std::chrono::steady_clock::now())
                                       .count(),
                                   stopped.status().message()));
        }
        if (!stop_sent && std::chrono::steady_clock::now() < stop_deadline) {
          std::this_thread::sleep_for(kStopRetryPause);
          continue;
        }
      }
      if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
        if (!stop_sent && stop_taken) return ended_unseen("");
        if (!stop_sent) {  // it never answered: lost, and the run may go on there
          const auto waited = gone_since != kAnswers ? kComeBackWait : kStopWait;
          const std::string refusal =
              stop_token_refused
                  ? (token_may_change
                         ? fmt::format("it refused the parent's token for {} s", waited.count())
                         : std::string("it refused the parent's token (from the environment)"))
              : gone_since != kAnswers
                  ? fmt::format("it refused or broke connections for {} s", waited.count())
                  : fmt::format("it did not answer a stop for {} s", waited.count());
          pool.MarkDown(lease.member(), refusal);
          pool.StopWhenBack(lease.member(), job_name, run_id);
          pool.Release(lease, AgentPool::Ending::kLost, answered_at);
          // Counted from its last poll, which it did not answer either (QA: "for 15 s" after
          // "for up to 8 s" read as a contradiction).
          std::string why =
              stop_token_refused
                  ? fmt::format("could not stop run {} on agent {}: {}; the run may go on there",
                                run_id, agent, refusal)
                  : fmt::format("could not stop run {} on agent {}: it has not answered for {} "
                                "s, its last poll included; the run may go on there",
                                run_id, agent, waited.count());
          context.Emit(EventType::kOnWarning, why);  // a remote job may still run: say it aloud
          return {TaskResult::kCanceled, why, child, agent};
        }
        pool.Release(lease, AgentPool::Ending::kFailed);
        return {TaskResult::kCanceled, fmt::format("run {} on agent {} did not confirm the stop", run_id, agent),
                child, agent};
      }
      if (!stopping && !first_poll) poll_started = std::chrono::steady_clock::now();
      Result<json> run = [&]() -> Result<json> {
        if (first_poll) {
          Result<json> polled = *std::move(first_poll);
          first_poll.reset();
          return polled;
        }
        // A cancel cuts the poll short rather than wait for its end (up to kPollWait): the
        // run is stopped at once. Polls after the stop (nothing registered: already canceled)
        // run their course.
        CancelToken::Callback cut_poll = InterruptOnCancel(context, lease);
        return WithFreshToken(pool, lease,
                              [&] { return lease.client().GetRun(run_id, kPollWait, child); });
      }();
      SayDownNotices(context, pool);
      if (run.ok()) answered_at = std::chrono::steady_clock::now();
      if (!run.ok()) {
        const Status& st = run.status();
        if (st.code() == Code::kUnavailable && context.cancel().canceled() &&
            (!stopping || std::chrono::steady_clock::now() < stop_deadline)) {
          // Canceled while the agent does not answer: stop it (again: it may have restarted)
          // until the stop wait runs out.
          if (stopping) std::this_thread::sleep_for(kStopRetryPause);
          stop_sent = false;
          continue;
        }
        const auto now = std::chrono::steady_clock::now();
        // Refused or broken within the poll's own wait, not silent for its read timeout (a
        // few seconds more): the process is gone.
        const bool quick = now - poll_started < 2 * kPollWait;
        // An agent that no longer takes the parent's token (401: rotated on the agent first,
        // or for good) is as out of reach as one that is gone: the run goes on there unseen
        // (QA: it was counted failed, run again elsewhere and never stopped).
        const bool token_refused = st.code() == Code::kUnauthenticated;
        const bool out_of_reach = st.code() == Code::kUnavailable || token_refused;
        if (out_of_reach && !context.cancel().canceled() &&
            (token_refused ? token_may_change : quick) &&
            (gone_since == kAnswers || now - gone_since < kComeBackWait)) {
          // Said once, and again when a gone agent comes back refusing the token (restarted
          // with a new one).
          if (gone_since == kAnswers || (token_refused && !token_refused_said)) {
            if (gone_since == kAnswers) gone_since = now;
            token_refused_said = token_refused;
            context.Emit(EventType::kOnWarning,
                         fmt::format("agent {} {} while it ran job {} (run {}); waiting up to {} "
                                     "s for {} before giving the run up: {}", agent,
                                     token_refused ? "refused the parent's token"
                                                   : "stopped answering",
                                     job_name, run_id,
                                     std::chrono::ceil<std::chrono::seconds>(
                                         gone_since + kComeBackWait - now)
                                         .count(),
                                     token_refused ? "a token it takes" : "it to come back",
                                     st.message()));
          }
          std::this_thread::sleep_for(kStopRetryPause);
          continue;
        }
        if (out_of_reach) {
          pool.MarkDown(lease.member(),
                        token_refused ? "it refused the parent's token: " + st.message()
                                      : st.message());
          if (context.cancel().canceled() && stop_taken) return ended_unseen(st.message());
          pool.StopWhenBack(lease.member(), job_name, run_id);  // a retry may run it elsewhere
          pool.Release(lease, AgentPool::Ending::kLost, answered_at);
          if (context.cancel().canceled()) {
            // The parent ends now: only its last try as it exits (StopLeftRuns) may still stop
            // the run, if the agent is back by then.
            std::string why = fmt::format("could not stop run {} on agent {}: it {} ({}); the run "
                                          "may go on there", run_id, agent,
                                          token_refused ? "refuses the parent's token"
                                                        : "does not answer",
                                          st.message());
            context.Emit(EventType::kOnWarning, why);  // a remote job may still run: say it aloud
            return {TaskResult::kCanceled, why, child, agent};
          }
          if (token_refused) {
            return {TaskResult::kFailure,
                    fmt::format("agent {} refused the parent's token while it ran job {} (run "
                                "{}), which may go on there: {}", agent, job_name, run_id,
                                st.message()),
                    child, agent};
          }
          return {TaskResult::kFailure,
                  fmt::format("agent {} was lost while it ran job {} (run {}): {}", agent, job_name,
                              run_id, st.message()),
                  child, agent};
        }
        if (st.code() == Code::kNotFound) {
          // The agent answers but no longer knows the run it took: it came back without its
          // data_dir (a new disk, a new machine), and the run's record and process went with
          // it. Lost, as with an agent that never came back (QA: counted as a failed run).
          pool.Release(lease, AgentPool::Ending::kLost, answered_at);
          return {context.cancel().canceled() ? TaskResult::kCanceled : TaskResult::kFailure,
                  fmt::format("agent {} no longer knows run {} of job {}; was it restarted "
                              "without its data_dir? {}", agent, run_id, job_name, st.message()),
                  child, agent};
        }
        // Stop it rather than leave work running that a retry would start again.
        (void)WithFreshToken(pool, lease, [&] { return lease.client().StopRun(run_id); });
        pool.Release(lease, AgentPool::Ending::kFailed);
        return {TaskResult::kFailure,
                fmt::format("cannot follow run {} of job {} on agent {}: {}", run_id, job_name, agent,
                            st.message()),
                child, agent};
      }
      if (gone_since != kAnswers) {
        gone_since = kAnswers;
        const bool token_taken = std::exchange(token_refused_said, false);
        // A warning, as the one it ends: the default console shows both (it showed only the
        // first, and the run read as lost).
        context.Emit(EventType::kOnWarning,
                     fmt::format("agent {} {}; run {} {} there", agent,
                                 token_taken ? "takes the parent's token again" : "answers again",
                                 run_id, stopping ? "is being stopped" : "goes on"));
      }
      std::string latest = child;
      for (const auto& step : run->value("steps", json::array())) {
        std::string id = step.value("execution_id", "");
        if (!id.empty()) latest = id;
      }
      std::string status = run->value("status", "");
      bool final = client::IsFinalRunStatus(status);
      if (latest != child) {
        child = latest;
        if (!final) context.RecordWhereItRuns(agent, child);
      }
      if (!final) continue;
      if (status == "succeeded") {
        pool.Release(lease, AgentPool::Ending::kSucceeded);
        return {TaskResult::kSuccess, "", child, agent};
      }
      pool.Release(lease, status == "canceled" && stopping ? AgentPool::Ending::kCanceled
                                                          : AgentPool::Ending::kFailed);
      std::string message = run->value("message", "");
      if (status == "canceled") {
        return {stopping ? TaskResult::kCanceled : TaskResult::kFailure,
                fmt::format("job {} run {} on agent {} was canceled{}", job_name, run_id, agent,
                            message.empty() ? "" : ": " + message),
                child, agent};
      }
      return {TaskResult::kFailure,
              fmt::format("job {} {} on agent {} (run {}){}", job_name, status, agent, run_id,
                          message.empty() ? "" : ": " + message),
              child, agent};
    }
  }

  // The agents behind the task's connection: one agent, or every agent of a pool.
  Result<std::vector<client::PoolMember>> Members(TaskContext& context) const {
    const auto& connections = context.package().connections;
    auto it = connections.find(connection);
    if (it == connections.end()) return NotFound("no connection named " + connection);
    std::vector<std::string> names =
        it->second.type == "agent-pool" ? it->second.members : std::vector<std::string>{connection};
    std::vector<client::PoolMember> members;
    for (const std::string& name : names) {
      ASSIGN_OR_RETURN(auto settings, context.Connection(name));
      client::AgentEndpoint e;
      e.url = settings["url"];
      auto path = [&](const char* key) {
        return settings[key].empty() ? std::string() : context.ResolvePath(settings[key]);
      };
      // A token file is the pool's to read (at each probe): one that cannot be read makes its
      // agent unusable, not every child fail.
      const std::string token_file = path("token_file");
      const std::string token_env =
          settings["token_env"].empty() ? "FANOUT_TOKEN" : settings["token_env"];
      e.token_source = client::TokenSource(token_file, token_env);
      if (token_file.empty()) {
        auto token = client::ResolveToken("", token_env);
        if (!token.ok()) return token.status().WithContext("agent connection " + name);
        // Process tasks inherit it: masked wherever they print it (the engine masks those it
        // knows before the run; this one's name came from a template).
        context.engine().recorder().masker().AddSecret(*token);
        e.token = *token;
      }
      e.ca_file = path("ca");
      e.cert_file = path("cert");
      e.key_file = path("key");
      e.read_timeout = kPollWait + kReadMargin;
      members.push_back({name, std::move(e), token_file});
    }
    return members;
  }
};

class AgentJobTaskType : public TaskType {
 public:
  std::string_view name() const override { return "agent-job"; }
  std::vector<std::string_view> keys() const override {
    return {"connection", "job", "params", "wait", "orphan_timeout"};
  }
  std::shared_ptr<const Task> Parse(const YAML::Node& node, TaskParser& parser) const override {
    auto job = parser.TemplateAt(node, "job", true);
    auto conn = parser.StringAt(node, "connection", true);
    if (!job || !conn) return nullptr;
    // A constant name is checked now rather than when the task runs (the agent would refuse it).
    if (job->is_constant() && !IsValidName(job->text())) {
      parser.Error(node["job"], fmt::format("job name '{}' must match {}", job->text(),
                                            kNameRule));
    }
    auto task = std::make_shared<AgentJobTask>(std::move(*job));
    task->connection = *conn;
    parser.CheckConnection(node["connection"], *conn, {"agent", "agent-pool"});
    task->params = parser.TemplateMapAt(node, "params");
    // A name no package can declare, which the agent would refuse at every start.
    if (YAML::Node params = node["params"]; params && params.IsMap()) {
      for (auto it = params.begin(); it != params.end(); ++it) {
        if (!IsValidName(it->first.Scalar())) {
          parser.Error(it->first, fmt::format("param name '{}' must match {}",
                                              it->first.Scalar(), kNameRule));
        }
      }
    }
    task->wait = parser.BoolAt(node, "wait").value_or(true);
    if (task->wait) task->orphan_timeout = kDefaultOrphanTimeout;
    if (auto text = parser.StringAt(node, "orphan_timeout", false)) {
      auto timeout = ParseDuration(*text);
      if (!timeout.ok()) {
        parser.Error(node["orphan_timeout"], timeout.status().message());
      } else if (!task->wait && timeout->count() > 0) {
        parser.Error(node["orphan_timeout"],
                     "`orphan_timeout` needs `wait: true`: a child started with `wait: false` "
                     "is followed by no one, and runs to its end");
      } else if (timeout->count() > 0 &&
                 (*timeout < kMinOrphanTimeout || *timeout > client::kMaxOrphanTimeout)) {
        parser.Error(node["orphan_timeout"],
                     fmt::format("`orphan_timeout` must be 0 (never) or from {} s to 30 days "
                                 "(below {} s, a child whose agent refused connections for a "
                                 "moment could be stopped while its parent still follows it)",
                                 kMinOrphanTimeout.count(), kMinOrphanTimeout.count()));
      } else {
        task->orphan_timeout = *timeout;
      }
    }
    return task;
  }
};

}  // namespace

std::unique_ptr<TaskType> MakeAgentJobTaskType() { return std::make_unique<AgentJobTaskType>(); }

}  // namespace fanout
