// AgentPool: late-binding placement of child runs over a set of agents (DESIGN §2, §9). A child
// is sent only to an agent with a free slot, the least loaded one; children that find no free
// slot wait here, in order, or longest first when their past durations are known. Agents that
// refuse connections or stop answering are out of the pool until they answer again.
//
// Thread-safe: every agent-job task attempt (on its own engine worker thread) calls Acquire and
// Release concurrently. Pools are shared process-wide: the same set of agents is one pool, so
// a parent and its in-process children balance together.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/agent_client.h"
#include "fanout/status.h"

namespace fanout::client {

struct PoolMember {
  std::string name;  // the agent connection's name in the package
  AgentEndpoint endpoint;
  // When set, the token is read from this file at every probe, not taken from endpoint.token:
  // a member whose file cannot be read is unusable (the others take its children), and a file
  // rewritten during a run (a rotated token) takes effect at the next probe.
  std::string token_file;
};

// Per agent, what this process sent it: for the summary `fanout run` prints.
struct AgentSummary {
  std::string name;
  std::string url;
  int children = 0;  // runs started there
  int unfollowed = 0;  // ... of which with wait: false: their ends are not this summary's
  int failed = 0;    // ended failed, abandoned, or canceled by someone else
  int lost = 0;      // the agent was lost while they ran
  double busy_seconds = 0;  // sum of the children's start-to-end times
  std::string unusable;     // why it was last found unusable, when it was at some point
  std::set<std::string> jobs_missing;  // jobs it answered 404 for (not deployed there then)
};

class AgentPool;

// A slot on one agent, held while a child runs there. Release it through AgentPool::Release
// (the destructor releases it as "lost" if that was forgotten).
class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept { *this = std::move(other); }
  Lease& operator=(Lease&& other) noexcept;
  ~Lease();

  bool valid() const { return pool_ != nullptr; }
  int member() const { return member_; }
  const std::string& agent_name() const;
  AgentClient& client() { return *client_; }

 private:
  friend class AgentPool;
  AgentPool* pool_ = nullptr;
  int member_ = -1;
  std::unique_ptr<AgentClient> client_;
  std::chrono::steady_clock::time_point since_{};
};

class AgentPool {
 public:
  // The pool for exactly these agents (by URL), created on first use.
  static std::shared_ptr<AgentPool> Get(const std::vector<PoolMember>& members);
  // Summaries of every pool this process used, one line per agent.
  static std::vector<AgentSummary> AllSummaries();

  explicit AgentPool(std::vector<PoolMember> members);
  ~AgentPool();
  AgentPool(const AgentPool&) = delete;
  AgentPool& operator=(const AgentPool&) = delete;

  struct Request {
    std::string job;
    // Seconds the child took before; with it, longer children are placed first.
    std::optional<double> expected_seconds;
    // Among children with the same precedence, the lower order goes first (its task's
    // TaskContext::start_order); equal orders go in arrival order.
    uint64_t order = 0;
    // Members not to use for this request (it said 409, or lacks the job), with what they said.
    std::map<int, std::string> exclude;
    // The member the child's last attempt failed on, and why: passed over, as a member that
    // lacks the job is, while another can take the child, so that a retry runs elsewhere.
    int failed_on = -1;
    std::string failed_why;
    // A child not followed (wait: false): when no agent has a free slot, it goes to the least
    // loaded agent's queue rather than waiting in the parent, so that its task ends once an
    // agent accepts the start, as SSIS's does. With a free slot, it takes that slot.
    bool queue_when_full = false;
  };
  // Waits for a free slot (or, with queue_when_full, for an agent that answers). Fails with
  // Unavailable naming every agent and why it is unusable when no agent can take the child, and
  // with Canceled when `canceled` turns true.
  Result<Lease> Acquire(const Request& request, const std::function<bool()>& canceled);

  // kCanceled: stopped because the parent asked (a cancel, a timeout), not counted as failed.
  enum class Ending { kSucceeded, kFailed, kCanceled, kLost, kNotStarted };
  // `busy_until`: when a lost child's agent last answered for it, its busy time's end (QA: a
  // lost child counted the wait for its agent, 10.8 s busy for four children of 0.4 s).
  void Release(Lease& lease, Ending ending,
               std::optional<std::chrono::steady_clock::time_point> busy_until = std::nullopt);
  // For a child started and not followed (wait: false): its slot stays taken in this pool's
  // count until a probe finds `run_id` ended on the agent.
  void Detach(Lease& lease, const std::string& run_id);
  // Takes a member out until it answers again (a failed call, a lost long-poll, a refused
  // token: the next probe reads its token file again).
  void MarkDown(int member, const std::string& reason);
  // The member answered but could not take a child (a 500, a refused token), and stays in: it
  // is the only one. Its summary line says why all the same.
  void NoteUnusable(int member, const std::string& reason);
  // Whether the member answered its last probe or call.
  bool IsAlive(int member);
  // Whether a member other than `member` answered its last probe and can take `request`: not
  // excluded by it, nor passed over for lacking its job.
  bool AnotherCanTake(int member, const Request& request);
  // The member answered 404 for `job` (not deployed there): children of that job pass it over
  // for kJobMissingFor, then one tries it again (a deploy during the run is picked up). True
  // the first time for that member and job in this pool: the caller says it, once.
  bool MarkJobMissing(int member, const std::string& job, const std::string& why);
  // Reads the lease's member's token file again, now (the agent refused the token: restarted or
  // rotated since the child was placed); true when the lease's client now sends another token.
  bool RefreshToken(Lease& lease);
  // A run of `job` given up for lost on `member` (its child is retried elsewhere, or the
  // parent ends): stopped as soon as the agent answers again, or by StopLeftRuns before this
  // process exits, so the same work does not go on twice.
  void StopWhenBack(int member, const std::string& job, const std::string& run_id);
  // The same for a start whose answer was lost: the run it may have begun, found by its
  // idempotency key once the agent answers, is stopped.
  void StopStartWhenBack(int member, const std::string& job, const std::string& idempotency_key);
  // Before this process exits: stops what StopWhenBack and StopStartWhenBack left, in every
  // pool. An agent that answered within kAgentComeBackWait (it may be restarting) is asked again
  // until `deadline`, others once; none again once `give_up` says so (a signal: the user would
  // rather exit). One line for each run that may go on unstopped.
  static std::vector<std::string> StopLeftRuns(std::chrono::steady_clock::time_point deadline,
                                               const std::function<bool()>& give_up);

  // The members the pool's probes found unusable (unreachable, draining, refusing the token)
  // since the last call, when they had been usable or not yet known, as {"NAME (URL)", why}: a
  // task reports them, so that a pool running on what is left says so.
  std::vector<std::pair<std::string, std::string>> TakeDownNotices();

  const std::vector<PoolMember>& members() const { return members_; }
  std::vector<AgentSummary> Summary();

 private:
  struct Orphan {
    std::string job;
    std::string run_id;           // or, when the start's answer was lost:
    std::string idempotency_key;  // the key of that start
  };
  struct State {
    bool known = false;  // status read at least once
    bool alive = false;
    std::string down_reason;
    std::string token;  // from the member's token file at the last probe that could read it
    int slots = 0;
    int others = 0;   // runs of other clients there, from the last status
    int running = 0;  // ours, now
    // The most of ours running there while a status request was out: the answer counts at
    // most that many of ours, so a child that ended and was released while the answer was on
    // its way is never taken for another client's run (which would idle the slot).
    int probe_peak = 0;
    std::chrono::steady_clock::time_point next_probe{};
    AgentSummary summary;
    std::vector<std::unique_ptr<AgentClient>> idle_clients;
    std::vector<Orphan> orphans;        // lost runs to stop once it answers
    std::string instance;  // the agent process's id, from its status
    // When it last answered a probe as usable; min() when it never did.
    std::chrono::steady_clock::time_point answered_at =
        std::chrono::steady_clock::time_point::min();
    // Jobs it lacks (MarkJobMissing): when that was last found, and what it said.
    std::map<std::string, std::pair<std::chrono::steady_clock::time_point, std::string>>
        missing_jobs;
    std::vector<std::string> detached;  // runs started unfollowed, counted in `running`
    std::chrono::steady_clock::time_point last_detached{};  // the latest of them, when
  };
  std::vector<std::pair<std::string, std::string>> down_notices_;  // for TakeDownNotices
  std::atomic<bool> notices_pending_{false};  // down_notices_ is not empty (set under mu_)
  struct Waiter {
    bool known;       // has an expected duration
    double expected;  // seconds
    uint64_t order;   // Request::order
    uint64_t seq;     // arrival
    std::condition_variable* wake;  // its own: a change wakes only the waiters it can serve
    const Request* request;  // what it asks for: the agents it refused
    bool operator<(const Waiter& o) const;
  };

  // One thread per member, so that a member slow to answer (a frozen agent, a cut network)
  // delays nobody else's status.
  void ProbeLoop(int member);
  // `reason` without a leading "agent URL: ", as it follows the agent's name where it is said.
  static std::string Unnamed(const State& s, std::string reason);
  // Takes the member out of placement for `reason`; with `notice`, also a down notice when it
  // was usable or not known yet.
  void SetUnusableLocked(int member, std::string reason, bool notice = true);
  // Stops the member's orphans through `client`; those the agent did not answer about, or
  // refused the token for, stay. Returns why the first of those stayed (OK: none did).
  Code StopOrphans(int member, AgentClient& client);
  // StopLeftRuns for one member: the lines for the runs it could not stop.
  std::vector<std::string> StopLeftRunsOf(int member,
                                          std::chrono::steady_clock::time_point deadline,
                                          const std::function<bool()>& give_up);
  // Whether the member answered as usable within kAgentComeBackWait: down now, it may be
  // restarting (an agent back that soon re-attaches its runs).
  bool MayComeBackLocked(const State& s) const;
  // What the member said to refuse `request`'s child (a 409 or a 404 for its job), if it did;
  // `with_marks`: also a 404 remembered from another child of the job (MarkJobMissing).
  const std::string* RefusalLocked(int member, const Request& request, bool with_marks) const;
  // Whether the member answered its last probe and did not refuse `request` (RefusalLocked).
  bool CanTakeLocked(int member, const Request& request, bool with_marks) const;
  void Probe(int member, AgentClient& client);
  // Whether children may be placed: every member has been probed once, or one answered and
  // kFirstProbeGrace has passed (a silent member does not hold up the first children).
  bool ReadyLocked() const;
  int Free(const State& s) const { return s.slots - s.running - s.others; }
  // After any change (a slot freed, a probe, a waiter gone): wakes as many waiters, best first,
  // as there are free slots, or all of them when no agent is alive (they fail, saying why).
  void WakeWaitersLocked();
  std::unique_ptr<AgentClient> BorrowClient(int member);
  // `token`, just read from the member's token file, for `client` and the clients lent from
  // now on; whether the client sent another one before.
  bool UseToken(int member, AgentClient& client, std::string token);

  const std::vector<PoolMember> members_;
  std::mutex mu_;
  std::condition_variable prober_wake_;  // the probers': stopping
  std::vector<State> states_;
  std::set<Waiter> waiters_;
  uint64_t next_seq_ = 0;
  bool stopping_ = false;
  size_t probed_ = 0;  // members probed at least once
  const std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
  std::vector<std::thread> probers_;
};

}  // namespace fanout::client
