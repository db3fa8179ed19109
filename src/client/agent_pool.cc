// Late-binding placement over agents (see agent_pool.h). One prober thread per pool reads each
// agent's /v1/status (slots, busy) twice a second (20 times while wait: false children are being
// handed to it) and re-probes lost agents every second; the
// parent's own count of what it has running is always current, so a finished child's slot is
// reused at once without waiting for the next probe.
#include "client/agent_pool.h"

#include <algorithm>
#include <deque>
#include <filesystem>

#include <fmt/format.h>

#include "common/agent_url.h"

namespace fanout::client {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using nlohmann::json;

constexpr auto kAliveProbeInterval = 500ms;
// While children started without waiting (wait: false) were handed to an agent lately: they
// end unannounced, and a slot held half a second after its run ended made a fan-out of short
// ones 9 times as slow as one that waits (QA: 32 children/s). Long ones are not polled at this
// rate for their whole life: once no child has been handed over for kDetachedFastFor, the
// agent is probed at kAliveProbeInterval again.
constexpr auto kDetachedProbeInterval = 50ms;
constexpr auto kDetachedFastFor = 2s;
constexpr auto kDownProbeInterval = 1000ms;
constexpr auto kWaitSlice = 200ms;  // how often a waiter re-checks cancel
constexpr auto kFirstProbeGrace = 300ms;  // see ReadyLocked
constexpr auto kRetryPause = 300ms;  // between the stops of left runs an agent did not answer
constexpr auto kJobMissingFor = 30s;  // see MarkJobMissing

struct Registry {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<AgentPool>> pools;
  // The same pools by their members as written: a task finds its pool without resolving the
  // token files' folders again (a path walk per member, for every child). A spelling keeps
  // the pool its folder resolved to first: a folder link repointed during the run (not the
  // token file's own link, which rotations repoint) may then split one agent over two pools.
  std::map<std::string, std::shared_ptr<AgentPool>> by_spelling;
};
Registry& GetRegistry() {
  static Registry* registry = new Registry();  // lives until exit, like its prober threads
  return *registry;
}

// Every pool this process made, each once.
std::vector<std::shared_ptr<AgentPool>> AllPools() {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  std::vector<std::shared_ptr<AgentPool>> pools;
  for (auto& [key, pool] : r.pools) pools.push_back(pool);
  return pools;
}

}  // namespace

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) pool_->Release(*this, AgentPool::Ending::kLost);
    pool_ = std::exchange(other.pool_, nullptr);
    member_ = std::exchange(other.member_, -1);
    client_ = std::move(other.client_);
    since_ = other.since_;
  }
  return *this;
}

Lease::~Lease() {
  if (pool_ != nullptr) pool_->Release(*this, AgentPool::Ending::kLost);
}

const std::string& Lease::agent_name() const { return pool_->members()[static_cast<size_t>(member_)].name; }

bool AgentPool::Waiter::operator<(const Waiter& o) const {
  // Children without a known duration go first, in order (they may be long); then the known
  // ones, longest first.
  if (known != o.known) return !known;
  if (known && expected != o.expected) return expected > o.expected;
  if (order != o.order) return order < o.order;
  return seq < o.seq;
}

std::shared_ptr<AgentPool> AgentPool::Get(const std::vector<PoolMember>& members) {
  // Keyed on everything a member is, not its URL alone: two connections to one agent with
  // different names or credentials are different members (a wrong token must get its 401).
  auto key_of = [&members](auto&& token_file_of) {
    std::vector<std::string> identities;
    for (const PoolMember& m : members) {
      const AgentEndpoint& e = m.endpoint;
      identities.push_back(fmt::format("{}\n{}\n{}\n{}\n{}\n{}\n{}", e.url, m.name,
                                       token_file_of(m.token_file), e.token, e.ca_file,
                                       e.cert_file, e.key_file));
    }
    std::sort(identities.begin(), identities.end());
    return fmt::format("{}", fmt::join(identities, "\n\n"));
  };
  const std::string spelling = key_of([](const std::string& file) { return file; });
  Registry& r = GetRegistry();
  {
    std::lock_guard lock(r.mu);
    if (auto known = r.by_spelling.find(spelling); known != r.by_spelling.end()) {
      return known->second;
    }
  }
  // One file however its folder is spelled (relative to two folders, through a link). Not the
  // file itself: a link that a rotation repoints (..data/token) stays one pool.
  const std::string key = key_of([](const std::string& file) {
    if (file.empty()) return file;
    std::filesystem::path path(file);
    std::error_code failed;
    std::filesystem::path folder = std::filesystem::weakly_canonical(path.parent_path(), failed);
    return !failed && !folder.empty() ? (folder / path.filename()).string() : file;
  });
  std::lock_guard lock(r.mu);
  auto& pool = r.pools[key];
  if (!pool) pool = std::make_shared<AgentPool>(members);
  r.by_spelling[spelling] = pool;
  return pool;
}

std::vector<AgentSummary> AgentPool::AllSummaries() {
  std::vector<std::shared_ptr<AgentPool>> pools = AllPools();
  // A connection in two pools is one line; two connections to one URL (other credentials)
  // are two, each with its own children and refusals (QA: one's 401 showed on the other's).
  std::map<std::pair<std::string, std::string>, AgentSummary> by_connection;
  for (auto& pool : pools) {
    for (AgentSummary& s : pool->Summary()) {
      AgentSummary& total = by_connection[{s.name, s.url}];
      if (total.url.empty()) {
        total = s;
        continue;
      }
      total.children += s.children;
      total.unfollowed += s.unfollowed;
      total.failed += s.failed;
      total.lost += s.lost;
      total.busy_seconds += s.busy_seconds;
      if (total.unusable.empty()) total.unusable = s.unusable;
      total.jobs_missing.insert(s.jobs_missing.begin(), s.jobs_missing.end());
    }
  }
  std::vector<AgentSummary> out;
  for (auto& [connection, s] : by_connection) {
    if (s.children > 0 || s.lost > 0 || !s.unusable.empty() || !s.jobs_missing.empty()) {
      out.push_back(s);
    }
  }
  std::sort(out.begin(), out.end(), [](const AgentSummary& a, const AgentSummary& b) {
    return std::tie(a.name, a.url) < std::tie(b.name, b.url);
  });
  return out;
}

AgentPool::AgentPool(std::vector<PoolMember> members)
    : members_(std::move(members)), states_(members_.size()) {
  for (size_t i = 0; i < members_.size(); ++i) {
    states_[i].summary.name = members_[i].name;
    // Shown in messages, summaries and events: never a password written into it.
    states_[i].summary.url = RedactAgentUrl(members_[i].endpoint.url);
    states_[i].token = members_[i].endpoint.token;
  }
  for (size_t i = 0; i < members_.size(); ++i) {
    probers_.emplace_back([this, i] { ProbeLoop(static_cast<int>(i)); });
  }
}

AgentPool::~AgentPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  prober_wake_.notify_all();
  for (std::thread& prober : probers_) prober.join();
}

void AgentPool::Probe(int member, AgentClient& client) {
  {
    std::lock_guard lock(mu_);
    State& s = states_[static_cast<size_t>(member)];
    s.probe_peak = s.running;
  }
  // A token file is read at every probe, so a fixed or rotated file takes effect within one.
  auto status = [&]() -> Result<json> {
    const std::string& token_file = members_[static_cast<size_t>(member)].token_file;
    if (!token_file.empty()) {
      ASSIGN_OR_RETURN(std::string token, ReadTokenFile(token_file));
      UseToken(member, client, std::move(token));
    }
    ASSIGN_OR_RETURN(json body, client.Status());
    // Another server's answer (a proxy's, another program's on the port) would throw below.
    auto typed = [&](const char* key, bool (json::*is)() const) {
      auto it = body.find(key);
      return it == body.end() || ((*it).*is)();
    };
    if (!body.is_object() || !typed("instance", &json::is_string) ||
        !typed("name", &json::is_string) || !typed("draining", &json::is_boolean) ||
        !typed("broken", &json::is_string) || !typed("slots", &json::is_number_integer) ||
        !typed("busy", &json::is_number_integer) || !typed("queued", &json::is_number_integer)) {
      return Internal(fmt::format("its /v1/status answer is not an agent's: {}",
                                  body.dump().substr(0, 200)));
    }
    return body;
  }();
  std::vector<std::string> detached, ended;
  if (status.ok()) {
    std::lock_guard lock(mu_);
    const State& s = states_[static_cast<size_t>(member)];
    // The oldest few only: the agent starts queued runs in order, so later ones end after them
    // (review: a thousand queued wait: false children made each probe a thousand requests).
    const size_t asked = std::min(s.detached.size(), static_cast<size_t>(2 * std::max(1, s.slots)));
    detached.assign(s.detached.begin(), s.detached.begin() + static_cast<ptrdiff_t>(asked));
  }
  for (const std::string& run_id : detached) {
    auto run = client.GetRun(run_id);
    if (run.ok() ? IsFinalRunStatus(run->value("status", "")) : run.status().code() == Code::kNotFound) {
      ended.push_back(run_id);
    } else if (!run.ok()) {
      break;  // gone again: the next probe asks
    }
  }
  if (status.ok()) StopOrphans(member, client);
  std::lock_guard lock(mu_);
  State& s = states_[static_cast<size_t>(member)];
  for (const std::string& run_id : ended) {
    s.detached.erase(std::find(s.detached.begin(), s.detached.end(), run_id));
    --s.running;
  }
  // The same agent process as other members (one agent listed twice, under two names or
  // URLs): the first of them has it, or its slots would count twice.
  int first = member;
  if (status.ok()) {
    s.instance = status->value("instance", "");
    for (size_t j = 0; j < static_cast<size_t>(member) && !s.instance.empty(); ++j) {
      if (states_[j].instance == s.instance) {
        first = static_cast<int>(j);
        break;
      }
    }
  }
  const std::string same_agent =
      !status.ok() ? ""
                   : fmt::format("it is the agent {} again, as this pool's member {} ({}): list "
                                 "each agent once, or its slots count twice",
                                 status->value("name", "?"),
                                 members_[static_cast<size_t>(first)].name,
                                 states_[static_cast<size_t>(first)].summary.url);
  for (size_t j = static_cast<size_t>(first) + 1; status.ok() && j < states_.size(); ++j) {
    if (static_cast<int>(j) != member && states_[j].instance == s.instance) {
      SetUnusableLocked(static_cast<int>(j), same_agent);
    }
  }
  if (!status.ok()) {
    SetUnusableLocked(member, status.status().message());
  } else if (status->value("draining", false)) {
    SetUnusableLocked(member, "the agent is draining (shutting down)");
  } else if (status->contains("broken")) {
    SetUnusableLocked(member, "the agent is broken: " + status->value("broken", ""));
  } else if (first < member) {
    SetUnusableLocked(member, same_agent);
  } else {
    s.known = true;
    s.alive = true;
    s.answered_at = Clock::now();
    s.down_reason.clear();
    s.slots = std::max(1, status->value("slots", 1));
    // Runs there that are not ours: another parent, or someone by hand. Ours in the answer
    // are at most the peak while it was on its way (a child may have ended and been released
    // since the agent answered).
    s.others = std::max(0, status->value("busy", 0) + status->value("queued", 0) -
                               std::max(s.running, s.probe_peak));
    const bool fast = !s.detached.empty() && Clock::now() - s.last_detached < kDetachedFastFor;
    s.next_probe = Clock::now() + (fast ? kDetachedProbeInterval : kAliveProbeInterval);
  }
  WakeWaitersLocked();
}

// Said after "NAME (URL)": a client's message that starts by naming the agent would say it
// twice.
std::string AgentPool::Unnamed(const State& s, std::string reason) {
  if (const std::string named = "agent " + s.summary.url + ": "; reason.starts_with(named)) {
    reason.erase(0, named.size());
  }
  return reason;
}

void AgentPool::SetUnusableLocked(int member, std::string reason, bool notice) {
  State& s = states_[static_cast<size_t>(member)];
  reason = Unnamed(s, std::move(reason));
  if (notice) {
    const std::string who =
        fmt::format("{} ({})", members_[static_cast<size_t>(member)].name, s.summary.url);
    auto pending = std::find_if(down_notices_.begin(), down_notices_.end(),
                                [&](const auto& said) { return said.first == who; });
    if (pending != down_notices_.end()) {
      pending->second = reason;  // not said yet: the latest reason (the first member, once known)
    } else if (s.alive || !s.known) {  // usable until now, or not known yet: said once
      down_notices_.emplace_back(who, reason);
      notices_pending_.store(true);
    }
  }
  s.known = true;
  s.alive = false;
  s.down_reason = std::move(reason);
  s.summary.unusable = s.down_reason;
  s.next_probe = Clock::now() + kDownProbeInterval;
}

Code AgentPool::StopOrphans(int member, AgentClient& client) {
  // Left in the list while they are stopped: StopLeftRuns, as the process exits, sees every one
  // not stopped yet (stopping one twice does no harm).
  std::vector<Orphan> orphans;
  {
    std::lock_guard lock(mu_);
    orphans = states_[static_cast<size_t>(member)].orphans;
  }
  auto stop = [&](const Orphan& orphan) -> Status {
    std::string run_id = orphan.run_id;
    if (run_id.empty()) {
      ASSIGN_OR_RETURN(run_id, client.FindRunByKey(orphan.idempotency_key));
      if (run_id.empty()) return Status::Ok();  // the start never got there
    }
    return client.StopRun(run_id).status();
  };
  for (const Orphan& orphan : orphans) {
    // The rest when it answers again, or takes the token again (its run goes on meanwhile).
    const Code code = stop(orphan).code();
    if (code == Code::kUnavailable || code == Code::kUnauthenticated) return code;
    std::lock_guard lock(mu_);
    auto& left = states_[static_cast<size_t>(member)].orphans;
    std::erase_if(left, [&](const Orphan& o) {
      return o.run_id == orphan.run_id && o.idempotency_key == orphan.idempotency_key;
    });
  }
  return Code::kOk;
}

std::vector<std::string> AgentPool::StopLeftRuns(Clock::time_point deadline,
                                                 const std::function<bool()>& give_up) {
  std::vector<std::shared_ptr<AgentPool>> pools = AllPools();
  // Every member at once: agents cut off together would otherwise each add their wait.
  std::deque<std::vector<std::string>> said;  // a deque: each thread's place stays put
  std::vector<std::thread> stoppers;
  for (auto& pool : pools) {
    for (size_t i = 0; i < pool->members_.size(); ++i) {
      {
        std::lock_guard lock(pool->mu_);
        if (pool->states_[i].orphans.empty()) continue;
      }
      said.emplace_back();
      stoppers.emplace_back([p = pool.get(), i, deadline, &give_up, &out = said.back()] {
        out = p->StopLeftRunsOf(static_cast<int>(i), deadline, give_up);
      });
    }
  }
  for (std::thread& t : stoppers) t.join();
  std::vector<std::string> left;
  for (auto& lines : said) left.insert(left.end(), lines.begin(), lines.end());
  return left;
}

std::vector<std::string> AgentPool::StopLeftRunsOf(int member, Clock::time_point deadline,
                                                   const std::function<bool()>& give_up) {
  // Short waits of its own: each call may outlast the deadline by these at most.
  AgentEndpoint endpoint = members_[static_cast<size_t>(member)].endpoint;
  {
    std::lock_guard lock(mu_);
    endpoint.token = states_[static_cast<size_t>(member)].token;
  }
  endpoint.connect_timeout = 1000ms;
  endpoint.read_timeout = 2000ms;
  AgentClient client(endpoint);
  const std::string& token_file = members_[static_cast<size_t>(member)].token_file;
  while (true) {
    // The token as it is now: the agent may have refused the last one read (a rotation).
    if (!token_file.empty()) {
      if (auto token = ReadTokenFile(token_file); token.ok()) client.SetToken(*token);
    }
    const bool token_refused = StopOrphans(member, client) == Code::kUnauthenticated;
    std::unique_lock lock(mu_);
    State& s = states_[static_cast<size_t>(member)];
    if (s.orphans.empty()) return {};
    // Answering, or down only a moment (it may be restarting): asked again until the deadline.
    if ((s.alive || MayComeBackLocked(s)) && Clock::now() + kRetryPause < deadline &&
        !give_up()) {
      lock.unlock();
      std::this_thread::sleep_for(kRetryPause);
      if (!give_up()) continue;
      lock.lock();
    }
    std::vector<std::string> left;
    const PoolMember& m = members_[static_cast<size_t>(member)];
    // Cut short by a signal, it may not have been asked again: "did not answer" would be more
    // than is known (review).
    const bool cut_short = give_up();
    const std::string did_not = token_refused ? "refused the parent's token when asked"
                                : cut_short   ? "had not answered"
                                              : "did not answer";
    const std::string stop_not_taken = token_refused ? "refused the parent's token for the stop"
                                                     : did_not + " the stop";
    const std::string when = cut_short ? " when a signal ended the wait" : "";
    for (const Orphan& o : std::exchange(s.orphans, {})) {
      left.push_back(
          o.run_id.empty()
              ? fmt::format("agent {} ({}) {} about a start of job {} whose answer was lost "
                            "(idempotency key {}){}: a run it began may still be running there",
                            m.name, s.summary.url, did_not, o.job, o.idempotency_key, when)
              : fmt::format("agent {} ({}) {} of run {} of job {}, given up for lost{}: it may "
                            "still be running there",
                            m.name, s.summary.url, stop_not_taken, o.run_id, o.job, when));
    }
    return left;
  }
}

bool AgentPool::MarkJobMissing(int member, const std::string& job, const std::string& why) {
  std::lock_guard lock(mu_);
  State& s = states_[static_cast<size_t>(member)];
  s.missing_jobs[job] = {Clock::now(), why};
  return s.summary.jobs_missing.insert(job).second;
}

const std::string* AgentPool::RefusalLocked(int member, const Request& request,
                                           bool with_marks) const {
  auto refused = request.exclude.find(member);
  if (refused != request.exclude.end()) return &refused->second;
  if (!with_marks) return nullptr;
  if (member == request.failed_on) return &request.failed_why;
  const State& s = states_[static_cast<size_t>(member)];
  auto missing = s.missing_jobs.find(request.job);
  if (missing == s.missing_jobs.end() || Clock::now() - missing->second.first >= kJobMissingFor) {
    return nullptr;
  }
  return &missing->second.second;
}

bool AgentPool::CanTakeLocked(int member, const Request& request, bool with_marks) const {
  return states_[static_cast<size_t>(member)].alive &&
         RefusalLocked(member, request, with_marks) == nullptr;
}

bool AgentPool::MayComeBackLocked(const State& s) const {
  return !s.alive && s.answered_at != Clock::time_point::min() &&
         Clock::now() - s.answered_at < kAgentComeBackWait;
}

void AgentPool::ProbeLoop(int member) {
  AgentEndpoint e = members_[static_cast<size_t>(member)].endpoint;
  e.connect_timeout = 1000ms;
  e.read_timeout = 2000ms;
  AgentClient client(e);
  Probe(member, client);
  std::unique_lock lock(mu_);
  ++probed_;
  WakeWaitersLocked();
  State& s = states_[static_cast<size_t>(member)];
  while (!stopping_) {
    prober_wake_.wait_until(lock, s.next_probe, [&] { return stopping_; });
    if (stopping_) break;
    if (s.next_probe > Clock::now()) continue;  // moved later meanwhile (MarkDown)
    s.next_probe = Clock::now() + kAliveProbeInterval;
    lock.unlock();
    Probe(member, client);
    lock.lock();
  }
}

bool AgentPool::ReadyLocked() const {
  if (probed_ == members_.size()) return true;
  if (Clock::now() - created_ < kFirstProbeGrace) return false;
  return std::any_of(states_.begin(), states_.end(), [](const State& s) { return s.alive; });
}

std::unique_ptr<AgentClient> AgentPool::BorrowClient(int member) {
  State& s = states_[static_cast<size_t>(member)];
  if (!s.idle_clients.empty()) {
    auto client = std::move(s.idle_clients.back());
    s.idle_clients.pop_back();
    if (client->endpoint().token != s.token) client->SetToken(s.token);
    return client;
  }
  AgentEndpoint endpoint = members_[static_cast<size_t>(member)].endpoint;
  endpoint.token = s.token;
  return std::make_unique<AgentClient>(std::move(endpoint));
}

Result<Lease> AgentPool::Acquire(const Request& request, const std::function<bool()>& canceled) {
  std::unique_lock lock(mu_);
  std::condition_variable wake;
  Waiter me{request.expected_seconds.has_value(), request.expected_seconds.value_or(0),
            request.order, next_seq_++, &wake, &request};
  waiters_.insert(me);
  auto leave = [&] {
    waiters_.erase(me);
    WakeWaitersLocked();  // the next waiter may now be first in line for a free slot
  };
  while (true) {
    if (canceled && canceled()) {
      leave();
      return Canceled("canceled while waiting for a free agent slot");
    }
    if (!ReadyLocked()) {
      wake.wait_for(lock, kFirstProbeGrace / 3);
      continue;
    }
    // Members remembered to lack the job, and the one the child last failed on, are passed
    // over unless no other can take the child: then they are asked again (the job may have
    // been deployed since; the failure may have been the child's own).
    bool usable = false;
    bool unknown = false;  // a member not probed yet may still turn out usable
    int best = -1;
    int least_queued = -1;  // with queue_when_full: the least loaded usable one, full or not
    bool marks = true;
    for (int pass = 0; pass < 2 && !usable; ++pass) {
      marks = pass == 0;
      unknown = false;
      double best_load = 0;
      double least_queued_load = 0;
      for (size_t i = 0; i < states_.size(); ++i) {
        const State& s = states_[i];
        unknown = unknown || !s.known;
        if (!CanTakeLocked(static_cast<int>(i), request, marks)) continue;
        usable = true;
        double load = static_cast<double>(s.running + s.others) / s.slots;
        if (least_queued < 0 || load < least_queued_load) {
          least_queued = static_cast<int>(i);
          least_queued_load = load;
        }
        if (Free(s) <= 0) continue;
        if (best < 0 || load < best_load) {
          best = static_cast<int>(i);
          best_load = load;
        }
      }
    }
    // Queued there rather than here, once every agent has been heard from (one not probed yet
    // may have a free slot). The agent starts it before children still waiting here for a slot
    // of it: a child not followed does not wait behind them (docs/agents.md).
    const bool to_queue = best < 0 && request.queue_when_full && least_queued >= 0 && !unknown;
    if (to_queue) best = least_queued;
    // Every agent down, one of them only just (an agent restarting, a blip): the children
    // wait for it, as running ones do, rather than spend their retries within milliseconds.
    bool may_come_back = false;
    for (size_t i = 0; !usable && i < states_.size(); ++i) {
      if (RefusalLocked(static_cast<int>(i), request, false) == nullptr &&
          MayComeBackLocked(states_[i])) {
        may_come_back = true;
      }
    }
    if (!usable && (unknown || may_come_back)) {
      wake.wait_for(lock, kWaitSlice);
      continue;
    }
    if (!usable) {
      std::vector<std::string> reasons;
      for (size_t i = 0; i < states_.size(); ++i) {
        const State& s = states_[i];
        const std::string* refused = RefusalLocked(static_cast<int>(i), request, false);
        std::string why = refused != nullptr ? "refused: " + *refused : s.down_reason;
        reasons.push_back(fmt::format("{} ({}): {}", members_[i].name, s.summary.url, why));
      }
      leave();
      return Unavailable(fmt::format("no agent can take job {}: {}", request.job,
                                     fmt::join(reasons, "; ")));
    }
    // The best waiter that can use the free agent gets it: longest first, or in start order
    // (Waiter::operator<), among those waiting now. One ahead that this agent refused (a 409,
    // a job it lacks) does not hold it up.
    bool ahead_takes_it = false;
    for (auto w = waiters_.begin(); best >= 0 && !to_queue && w != waiters_.end() && *w < me;
         ++w) {
      if (RefusalLocked(best, *w->request, marks) == nullptr) {
        ahead_takes_it = true;
        break;
      }
    }
    if (best >= 0 && !ahead_takes_it) {
      State& s = states_[static_cast<size_t>(best)];
      ++s.running;
      s.probe_peak = std::max(s.probe_peak, s.running);
      Lease lease;
      lease.pool_ = this;
      lease.member_ = best;
      lease.client_ = BorrowClient(best);
      lease.since_ = Clock::now();
      leave();
      return lease;
    }
    wake.wait_for(lock, kWaitSlice);
  }
}

bool AgentPool::RefreshToken(Lease& lease) {
  if (lease.pool_ != this || !lease.client_) return false;
  const std::string& token_file = members_[static_cast<size_t>(lease.member_)].token_file;
  if (token_file.empty()) return false;
  auto token = ReadTokenFile(token_file);
  return token.ok() && UseToken(lease.member_, *lease.client_, std::move(*token));
}

bool AgentPool::UseToken(int member, AgentClient& client, std::string token) {
  const bool changed = token != client.endpoint().token;
  if (changed) client.SetToken(token);
  std::lock_guard lock(mu_);
  states_[static_cast<size_t>(member)].token = std::move(token);
  return changed;
}

bool AgentPool::IsAlive(int member) {
  std::lock_guard lock(mu_);
  return states_[static_cast<size_t>(member)].alive;
}

bool AgentPool::AnotherCanTake(int member, const Request& request) {
  // The member the child last failed on is passed over only while another can take it: it is
  // another all the same.
  Request any_other = request;
  any_other.failed_on = -1;
  std::lock_guard lock(mu_);
  for (size_t other = 0; other < states_.size(); ++other) {
    if (static_cast<int>(other) != member &&
        CanTakeLocked(static_cast<int>(other), any_other, /*with_marks=*/true)) {
      return true;
    }
  }
  return false;
}

void AgentPool::WakeWaitersLocked() {
  if (!ReadyLocked()) return;
  int free = 0;
  bool any_alive = false;
  for (const State& s : states_) {
    if (!s.alive) continue;
    any_alive = true;
    free += std::max(0, Free(s));
  }
  for (const Waiter& w : waiters_) {
    if (any_alive && free-- <= 0) break;
    w.wake->notify_one();
  }
}

void AgentPool::Release(Lease& lease, Ending ending, std::optional<Clock::time_point> busy_until) {
  if (lease.pool_ == nullptr) return;
  std::lock_guard lock(mu_);
  State& s = states_[static_cast<size_t>(lease.member_)];
  --s.running;
  if (ending != Ending::kNotStarted) {
    ++s.summary.children;
    const Clock::time_point end = std::max(lease.since_, busy_until.value_or(Clock::now()));
    s.summary.busy_seconds += std::chrono::duration<double>(end - lease.since_).count();
  }
  if (ending == Ending::kFailed) ++s.summary.failed;
  if (ending == Ending::kLost) ++s.summary.lost;
  if (ending != Ending::kLost && lease.client_) s.idle_clients.push_back(std::move(lease.client_));
  lease.client_.reset();
  lease.pool_ = nullptr;
  lease.member_ = -1;
  WakeWaitersLocked();
}

void AgentPool::Detach(Lease& lease, const std::string& run_id) {
  if (lease.pool_ == nullptr) return;
  std::lock_guard lock(mu_);
  State& s = states_[static_cast<size_t>(lease.member_)];
  s.detached.push_back(run_id);
  s.last_detached = Clock::now();
  ++s.summary.children;
  ++s.summary.unfollowed;
  if (s.alive && s.next_probe > Clock::now() + kDetachedProbeInterval) {
    s.next_probe = Clock::now() + kDetachedProbeInterval;
    prober_wake_.notify_all();
  }
  if (lease.client_) s.idle_clients.push_back(std::move(lease.client_));
  lease.client_.reset();
  lease.pool_ = nullptr;
  lease.member_ = -1;
}

void AgentPool::MarkDown(int member, const std::string& reason) {
  std::lock_guard lock(mu_);
  SetUnusableLocked(member, reason, /*notice=*/false);  // the caller says why itself
  WakeWaitersLocked();
}

void AgentPool::NoteUnusable(int member, const std::string& reason) {
  std::lock_guard lock(mu_);
  State& s = states_[static_cast<size_t>(member)];
  s.summary.unusable = Unnamed(s, reason);
}

void AgentPool::StopWhenBack(int member, const std::string& job, const std::string& run_id) {
  std::lock_guard lock(mu_);
  states_[static_cast<size_t>(member)].orphans.push_back({job, run_id, ""});
}

std::vector<std::pair<std::string, std::string>> AgentPool::TakeDownNotices() {
  // Asked after every placement and every poll of every child: without a notice, no lock.
  if (!notices_pending_.load()) return {};
  std::lock_guard lock(mu_);
  notices_pending_.store(false);
  return std::exchange(down_notices_, {});
}

void AgentPool::StopStartWhenBack(int member, const std::string& job,
                                  const std::string& idempotency_key) {
  std::lock_guard lock(mu_);
  states_[static_cast<size_t>(member)].orphans.push_back({job, "", idempotency_key});
}

std::vector<AgentSummary> AgentPool::Summary() {
  std::lock_guard lock(mu_);
  std::vector<AgentSummary> out;
  for (const State& s : states_) out.push_back(s.summary);
  return out;
}

}  // namespace fanout::client

