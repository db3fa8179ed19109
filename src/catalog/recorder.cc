// Recorder: takes rows and events from any thread. Its delivery thread masks secrets, hands
// events to the log sinks at once and passes the rows on to its catalog thread, which writes
// them in batches, retrying (and spooling) while the catalog is unavailable: a catalog that
// hangs holds up neither the console nor the log files.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>

#include "catalog/spool.h"
#include "common/util.h"
#include "fanout/catalog.h"

namespace fanout {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Big enough that a transaction's fixed cost vanishes, small enough that another process waiting
// for the write lock is not kept out for long.
constexpr size_t kMaxRowsPerTransaction = 10000;
// Rows wait this long (or until this many have gathered) before a transaction, so that a trickle
// of events does not cost a commit each; the catalog stays live to within a few milliseconds.
constexpr auto kGatherDelay = 5ms;
constexpr size_t kGatherRows = 1000;
// Queued rows at which producers wait for the thread to take them: an engine that makes events
// faster than the catalog stores them (a long loop of trivial tasks) is held to the catalog's
// pace rather than growing without bound (~600 bytes a row). Far above what a 10,000-task run
// queues, so the engine benchmark never waits.
constexpr size_t kMaxQueuedRows = 65536;
// Emptied rounds kept for their capacity (see HandOver).
constexpr size_t kSpareRounds = 4;
// Sinks buffer their output; this bounds how stale a log file or console may be.
constexpr auto kSinkFlushInterval = 100ms;
constexpr auto kFirstRetryDelay = 50ms;
constexpr auto kMaxRetryDelay = 2000ms;
// The thread's first wait (Run): leftovers of earlier processes are replayed after it, at the
// first row recorded or after this long.
constexpr auto kFirstWait = 50ms;

size_t RowCount(const CatalogBatch& batch) {
  return batch.executions.size() + batch.task_runs.size() + batch.events.size();
}

std::string TaskRunKey(const TaskRunRow& row) {
  std::string key = row.execution_id;
  key += '\0';
  key += row.task_path;
  key += '\0';
  key += std::to_string(row.attempt);
  return key;
}

// Moves up to `budget` rows of `from`, starting at `offset`, into `to`; returns how many.
template <typename Row>
size_t TakeRows(std::vector<Row>& from, size_t offset, std::vector<Row>& to, size_t& budget) {
  size_t n = std::min(budget, from.size() - offset);
  to.reserve(n);
  for (size_t i = 0; i < n; ++i) to.push_back(std::move(from[offset + i]));
  budget -= n;
  return n;
}

template <typename Row>
void PutRowsBack(std::vector<Row>& chunk, std::vector<Row>& into, size_t offset) {
  for (size_t i = 0; i < chunk.size(); ++i) into[offset + i] = std::move(chunk[i]);
}

// RecordLater's rows, made on the thread at their place in the queue: after the rows queued
// before them (the `at_` sizes: the queue's then).
struct DeferredRows {
  size_t at_executions, at_task_runs, at_events;
  std::function<void(CatalogBatch&)> make;
};

template <typename Row>
void MoveUpTo(std::vector<Row>& from, size_t& next, size_t end, std::vector<Row>& to) {
  for (; next < end; ++next) to.push_back(std::move(from[next]));
}

// Makes each deferred entry's rows and puts them in `round` where the entry was queued;
// `ordered` is scratch space (empty on entry and on return), kept for its capacity.
void MakeDeferredRows(std::vector<DeferredRows>& deferred, CatalogBatch& round,
                      CatalogBatch& ordered) {
  size_t executions = 0, task_runs = 0, events = 0;
  for (DeferredRows& entry : deferred) {
    MoveUpTo(round.executions, executions, entry.at_executions, ordered.executions);
    MoveUpTo(round.task_runs, task_runs, entry.at_task_runs, ordered.task_runs);
    MoveUpTo(round.events, events, entry.at_events, ordered.events);
    entry.make(ordered);
  }
  MoveUpTo(round.executions, executions, round.executions.size(), ordered.executions);
  MoveUpTo(round.task_runs, task_runs, round.task_runs.size(), ordered.task_runs);
  MoveUpTo(round.events, events, round.events.size(), ordered.events);
  deferred.clear();
  std::swap(round, ordered);
  ordered.clear();
}

template <typename Row>
void EraseFront(std::vector<Row>& rows, size_t n) {
  rows.erase(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(n));
}

}  // namespace

struct Recorder::Impl {
  Impl(std::unique_ptr<Catalog> catalog_in, std::vector<std::unique_ptr<EventSink>> sinks_in,
       Masker* masker_in, const RecorderOptions& options)
      : catalog(std::move(catalog_in)),
        sinks(std::move(sinks_in)),
        masker(masker_in),
        shutdown_retry(options.shutdown_retry),
        stop_retrying(options.stop_retrying),
        failure_reported(options.unreachable_said) {
    if (catalog && !options.spool_dir.empty()) {
      spool = std::make_unique<catalog::Spool>(options.spool_dir, options.catalog_spec);
    }
    uid_prefix = NewExecutionId();
  }

  void Run();       // the delivery thread
  void WriteLoop();  // the catalog thread
  template <typename Push>
  void Enqueue(Push push);
  void Deliver(CatalogBatch& round);
  void HandOver(CatalogBatch& round, uint64_t flush_ticket, bool stop);
  void TakeInbox(std::vector<CatalogBatch>& rounds, Clock::time_point since);
  void MaybeWriteCatalog(bool force);
  void WritePending();
  void OnWriteFailure(const Status& status);
  void SpoolPending();
  Status TrySpool();
  void ReportSpoolFailure(const Status& status);
  void FlushSinks();
  void Shutdown();
  void ReplayLeftovers();
  Clock::time_point DeliveryDeadline(bool gather) const;
  Clock::time_point WriteDeadline() const;

  std::unique_ptr<Catalog> catalog;       // may be null: then there is no catalog thread
  std::unique_ptr<catalog::Spool> spool;  // null: rows wait in memory only
  std::string uid_prefix;                 // events get uid PREFIX:SEQ, unique across processes
  uint64_t next_event_seq = 0;            // the delivery thread's own (Deliver)
  std::vector<std::unique_ptr<EventSink>> sinks;
  Masker* masker;
  Clock::duration shutdown_retry;
  std::function<bool()> stop_retrying;  // may be empty

  // Shared between producers and both threads, guarded by mu.
  std::mutex mu;
  std::condition_variable wake;          // producers, Flush and the destructor -> delivery
  std::condition_variable writer_wake;   // delivery -> the catalog thread
  std::condition_variable flushed;       // -> Flush callers
  std::condition_variable room;          // -> producers waiting at kMaxQueuedRows
  int producers_waiting = 0;
  std::vector<ExecutionRow> executions;
  std::vector<TaskRunRow> task_runs;
  std::vector<Event> events;
  std::vector<DeferredRows> deferred;
  size_t deferred_rows = 0;  // how many rows `deferred` will make
  uint64_t flush_requested = 0;  // tickets handed out by Flush()
  uint64_t flush_done = 0;       // tickets whose rows have all been delivered
  bool stopping = false;
  bool idle = false;          // delivery waits; a producer that sees this may wake it
  bool gather_sleep = false;  // ...for at most kGatherDelay: rows are gathering
  // Rounds of rows delivered to the sinks, for the catalog thread (whole rounds: handing one
  // over moves no row), with the newest Flush ticket and the end handed over with them (a
  // ticket is done once the catalog thread has written its rows).
  std::vector<CatalogBatch> inbox;
  size_t inbox_rows = 0;
  std::vector<CatalogBatch> spare_rounds;  // emptied by the catalog thread, for delivery
  Clock::time_point inbox_since;  // when the oldest round in it was handed over
  uint64_t flush_handed = 0;
  bool writer_stopping = false;
  bool writer_idle = false;             // the catalog thread waits...
  bool writer_waiting_forever = false;  // ...with no deadline: nothing will wake it but delivery

  // Called with `mu` held by a producer that has just queued a row. Delivery that sleeps while
  // rows gather wakes on its own within kGatherDelay, so it is woken early only when a batch's
  // worth has queued for it (rows waiting for the catalog thread are none of its business).
  bool ShouldWake() {
    if (!idle) return false;
    if (gather_sleep && UndeliveredRows() < kGatherRows) return false;
    idle = false;
    return true;
  }
  // With `mu` held: whether delivery has something to do now.
  bool HasWork() const {
    return !executions.empty() || !task_runs.empty() || !events.empty() || !deferred.empty() ||
           stopping || flush_requested > flush_handed;
  }
  // With `mu` held: whether the catalog thread has something to do now.
  bool WriterHasWork() const {
    return inbox_rows > 0 || writer_stopping || flush_handed > flush_done;
  }
  size_t UndeliveredRows() const {
    return executions.size() + task_runs.size() + events.size() + deferred_rows;
  }
  // What bounds the queue: a catalog that is stuck holds its producers up too.
  size_t QueuedRows() const { return UndeliveredRows() + inbox_rows; }

  // The delivery thread's own state.
  bool sinks_dirty = false;
  Clock::time_point last_sink_flush;

  // The catalog thread's own state.
  CatalogBatch pending;                                   // rows not yet in the catalog
  std::unordered_map<std::string, size_t> task_run_slot;  // key -> index in pending.task_runs
  Clock::time_point pending_since;
  bool failing = false;
  bool failure_reported = false;
  bool spool_failure_reported = false;
  Clock::time_point next_retry;
  // Leftovers of earlier processes that could not be delivered yet (the catalog was down at
  // the start): tried once more after this process's first successful write, and again each
  // time the catalog comes back, but not over and over while it answers (a file that always
  // fails would be re-sent from its start each time).
  bool leftovers_waiting = false;
  bool leftovers_retried = false;
  Clock::duration retry_delay = kFirstRetryDelay;

  std::thread thread;         // delivery
  std::thread writer_thread;  // the catalog's: started by delivery at its first hand-over
};

Recorder::Recorder(std::unique_ptr<Catalog> catalog, std::vector<std::unique_ptr<EventSink>> sinks,
                   std::shared_ptr<Masker> masker, RecorderOptions options)
    : masker_(masker ? std::move(masker) : std::make_shared<Masker>()),
      keeps_nothing_(!catalog && sinks.empty()),
      impl_(std::make_unique<Impl>(std::move(catalog), std::move(sinks), masker_.get(), options)) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->Run(); });
  // Gives the new thread its chance to reach its first wait before this one goes on; it
  // usually does (the catalog thread is started by it, on its first hand-over). A new thread
  // starts on the CPU of the thread that made it; left runnable there while its maker ran a
  // package, it was given that CPU for a whole 4 ms tick while the other CPU stayed idle, which
  // doubled a 10,000-task run's time in about half the runs. Asleep, it is woken later onto an
  // idle CPU. Waiting for a flag instead cost each child `fanout run` of an agent about 0.5 ms
  // at start on a busy machine.
  std::this_thread::yield();
}

Recorder::~Recorder() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  impl_->thread.join();  // hands the end over to the catalog thread, which it started
  if (impl_->writer_thread.joinable()) impl_->writer_thread.join();
}

// The producer side is a push under a mutex; the delivery thread is woken only when it sleeps
// beyond a gathering window or enough rows have gathered, so a busy engine pays no system call
// per event.
template <typename Push>
void Recorder::Impl::Enqueue(Push push) {
  bool wake_thread;
  {
    std::unique_lock lock(mu);
    if (QueuedRows() >= kMaxQueuedRows) {
      ++producers_waiting;
      room.wait(lock, [&] { return QueuedRows() < kMaxQueuedRows; });
      --producers_waiting;
    }
    push();
    wake_thread = ShouldWake();
  }
  if (wake_thread) wake.notify_one();
}

// With nothing to keep (no catalog, no sink), rows are dropped at once: queued, they woke the
// idle thread for every event (a futex call each, twice the engine's own time per task with
// logging off).
void Recorder::RecordExecution(ExecutionRow row) {
  if (keeps_nothing_) return;
  impl_->Enqueue([&] { impl_->executions.push_back(std::move(row)); });
}

void Recorder::RecordTaskRun(TaskRunRow row) {
  if (keeps_nothing_) return;
  impl_->Enqueue([&] { impl_->task_runs.push_back(std::move(row)); });
}

void Recorder::Emit(Event event) {
  if (keeps_nothing_) return;
  impl_->Enqueue([&] { impl_->events.push_back(std::move(event)); });
}

void Recorder::RecordLater(size_t rows, std::function<void(CatalogBatch&)> make) {
  if (keeps_nothing_) return;
  impl_->Enqueue([&] {
    impl_->deferred.push_back({impl_->executions.size(), impl_->task_runs.size(),
                               impl_->events.size(), std::move(make)});
    impl_->deferred_rows += rows;
  });
}

void Recorder::Flush() {
  std::unique_lock lock(impl_->mu);
  uint64_t ticket = ++impl_->flush_requested;
  impl_->idle = false;
  impl_->wake.notify_one();
  impl_->flushed.wait(lock, [&] { return impl_->flush_done >= ticket; });
}

void Recorder::Impl::Run() {
  // Swapped with the shared queues each round, so both sides keep reusing their capacity.
  CatalogBatch round;
  std::vector<DeferredRows> round_deferred;
  CatalogBatch reordered;  // MakeDeferredRows' scratch
  last_sink_flush = Clock::now();
  // After a round that carried rows, the next ones gather for kGatherDelay (producers do not
  // wake this thread for each), so that a busy engine pays no system call per event.
  bool gather = false;
  for (;;) {
    uint64_t flush_ticket;
    bool flush, stop;
    {
      std::unique_lock lock(mu);
      while (!HasWork()) {
        Clock::time_point deadline = DeliveryDeadline(gather);
        gather = false;
        if (deadline <= Clock::now()) break;
        idle = true;
        gather_sleep = deadline != Clock::time_point::max() &&
                       deadline - Clock::now() <= kGatherDelay;
        if (deadline == Clock::time_point::max()) {
          wake.wait(lock);
        } else {
          wake.wait_until(lock, deadline);
        }
        idle = false;
      }
      round.executions.swap(executions);
      round.task_runs.swap(task_runs);
      round.events.swap(events);
      round_deferred.swap(deferred);
      deferred_rows = 0;
      flush_ticket = flush_requested;
      flush = flush_ticket > flush_handed;
      stop = stopping;
      if (producers_waiting > 0) room.notify_all();
    }
    if (!round_deferred.empty()) MakeDeferredRows(round_deferred, round, reordered);
    gather = RowCount(round) > 0;
    Deliver(round);
    if (stop || flush || (sinks_dirty && Clock::now() - last_sink_flush >= kSinkFlushInterval)) {
      FlushSinks();
    }
    HandOver(round, flush_ticket, stop);
    if (stop) return;
  }
}

// Masks the round's rows, hands its events to the sinks in order and names them; the rows stay
// in `round` for HandOver.
void Recorder::Impl::Deliver(CatalogBatch& round) {
  bool mask = !masker->empty();
  if (mask) {
    for (ExecutionRow& row : round.executions) {
      row.message = masker->Mask(row.message);
      for (auto& [name, param] : row.parameters) param.value = masker->MaskValue(param.value);
    }
    for (TaskRunRow& row : round.task_runs) row.message = masker->Mask(row.message);
  }
  for (Event& event : round.events) {
    // Named here, in queue order, rather than by the engine's thread as it emits: a string
    // built on the hot path for every event.
    event.uid = uid_prefix + ":" + std::to_string(next_event_seq++);
    if (mask) {
      event.message = masker->Mask(event.message);
      event.data_bytes = masker->Mask(event.data_bytes);
      event.source = masker->Mask(event.source);
    }
    for (auto& sink : sinks) sink->Write(event);
  }
  if (!round.events.empty() && !sinks.empty()) sinks_dirty = true;
}

// Passes the round's rows (emptying it), a Flush ticket and the end on to the catalog thread;
// without a catalog, the rows are dropped and the ticket is done.
void Recorder::Impl::HandOver(CatalogBatch& round, uint64_t flush_ticket, bool stop) {
  if (!catalog) {
    round.clear();
    std::lock_guard lock(mu);
    if (stop) flush_ticket = flush_requested;  // a Flush() racing with the destructor returns
    if (flush_ticket > flush_done) {
      flush_handed = flush_done = flush_ticket;
      flushed.notify_all();
    }
    return;
  }
  // Started by the first hand-over rather than with the Recorder: the thread that makes the
  // Recorder (a child `fanout run` of an agent's package step, starting) does not pay for it.
  if (!writer_thread.joinable()) writer_thread = std::thread([this] { WriteLoop(); });
  const size_t rows = RowCount(round);
  bool wake_writer;
  {
    std::lock_guard lock(mu);
    if (rows > 0) {
      if (inbox_rows == 0) inbox_since = Clock::now();
      inbox.push_back(std::move(round));
      inbox_rows += rows;
      // The next round (and so the producers' queues, swapped with it) reuses the capacity of
      // one the catalog thread has emptied: growing fresh vectors every round, under the lock
      // producers take, cost 8 writers a tenth of their rate.
      round = CatalogBatch();
      if (!spare_rounds.empty()) {
        round = std::move(spare_rounds.back());
        spare_rounds.pop_back();
      }
    }
    const bool flush = flush_ticket > flush_handed;
    if (flush) flush_handed = flush_ticket;
    writer_stopping = writer_stopping || stop;
    // A catalog thread gathering rows (it sleeps with a deadline) takes these when it wakes.
    wake_writer = writer_idle && (flush || stop || (writer_waiting_forever && rows > 0) ||
                                  inbox_rows >= kGatherRows);
    if (wake_writer) writer_idle = false;
  }
  if (wake_writer) writer_wake.notify_one();
}

// The catalog thread: rows from the inbox into `pending`, written in batches; during an outage
// spooled and retried; at the end, retried for a while (Shutdown).
void Recorder::Impl::WriteLoop() {
  std::vector<CatalogBatch> taken;
  Clock::time_point taken_since;
  {
    // First, straight to sleep (see the constructor): leftovers and rows come after.
    std::unique_lock lock(mu);
    writer_idle = true;
    writer_waiting_forever = true;
    writer_wake.wait_for(lock, kFirstWait, [&] { return WriterHasWork(); });
    writer_idle = false;
  }
  // Rows that earlier processes could not deliver go first, so the catalog stays in order.
  ReplayLeftovers();
  for (;;) {
    uint64_t flush_ticket;
    bool stop;
    {
      std::unique_lock lock(mu);
      while (!WriterHasWork()) {
        Clock::time_point deadline = WriteDeadline();
        if (deadline <= Clock::now()) break;
        writer_idle = true;
        writer_waiting_forever = deadline == Clock::time_point::max();
        if (writer_waiting_forever) {
          writer_wake.wait(lock);
        } else {
          writer_wake.wait_until(lock, deadline);
        }
        writer_idle = false;
      }
      // The rounds taken last time, empty now, go back with their capacity.
      for (CatalogBatch& round : taken) {
        if (spare_rounds.size() < kSpareRounds) spare_rounds.push_back(std::move(round));
      }
      taken.clear();
      std::swap(taken, inbox);
      inbox_rows = 0;
      taken_since = inbox_since;
      flush_ticket = flush_handed;
      stop = writer_stopping;
      if (producers_waiting > 0) room.notify_all();
    }
    TakeInbox(taken, taken_since);
    if (stop) break;
    bool flush = flush_ticket > flush_done;  // only this thread writes flush_done
    MaybeWriteCatalog(flush);
    if (flush) {
      std::lock_guard lock(mu);
      flush_done = flush_ticket;
      flushed.notify_all();
    }
  }
  // Delivery set `writer_stopping` after handing over its last rows, so this round held
  // everything.
  Shutdown();
  // A Flush() racing with the destructor (a caller bug) returns rather than hang.
  std::lock_guard lock(mu);
  flush_done = flush_requested;
  flushed.notify_all();
}

// Moves the rows of the rounds taken from the inbox (emptying each round) into `pending`;
// `since`: when the oldest was handed over, from when its rows have been gathering.
void Recorder::Impl::TakeInbox(std::vector<CatalogBatch>& rounds, Clock::time_point since) {
  if (rounds.empty()) return;
  if (RowCount(pending) == 0) pending_since = since;
  for (CatalogBatch& rows : rounds) {
    for (ExecutionRow& row : rows.executions) pending.executions.push_back(std::move(row));
    for (TaskRunRow& row : rows.task_runs) {
      // A task's "running" and final rows often arrive together; store only the final one.
      auto [it, inserted] = task_run_slot.try_emplace(TaskRunKey(row), pending.task_runs.size());
      if (inserted) {
        pending.task_runs.push_back(std::move(row));
      } else {
        pending.task_runs[it->second] = std::move(row);
      }
    }
    for (Event& event : rows.events) pending.events.push_back(std::move(event));
    rows.clear();
  }
}

void Recorder::Impl::MaybeWriteCatalog(bool force) {
  Clock::time_point now = Clock::now();
  if (failing) {
    // During an outage rows go to the spool at once, so a crash loses almost nothing.
    SpoolPending();
    if (!force && now < next_retry) return;
    if (spool) {
      Status replayed = spool->Replay(*catalog, kMaxRowsPerTransaction);
      if (!replayed.ok()) return OnWriteFailure(replayed);
    }
  } else if (RowCount(pending) == 0 ||
             (!force && RowCount(pending) < kGatherRows && now - pending_since < kGatherDelay)) {
    return;
  }
  WritePending();
}

void Recorder::Impl::SpoolPending() {
  Status spooled = TrySpool();
  if (!spooled.ok()) ReportSpoolFailure(spooled);
}

Status Recorder::Impl::TrySpool() {
  if (!spool || RowCount(pending) == 0) return Status::Ok();
  RETURN_IF_ERROR(spool->Append(pending));
  spool_failure_reported = false;  // a later failure is news again
  pending.clear();
  task_run_slot.clear();
  return Status::Ok();
}

// Once: it is retried every few milliseconds while the catalog is down.
void Recorder::Impl::ReportSpoolFailure(const Status& status) {
  if (spool_failure_reported) return;
  spool_failure_reported = true;
  std::fprintf(stderr,
               "fanout: cannot spool the rows the catalog has not taken (%s); they wait in "
               "memory, and are lost if this process ends before the catalog is back\n",
               status.message().c_str());
}

// Writes `pending` in transactions of at most kMaxRowsPerTransaction rows. On failure keeps the
// unwritten rows, in order, for the next attempt.
void Recorder::Impl::WritePending() {
  Status status;
  if (RowCount(pending) <= kMaxRowsPerTransaction) {
    status = catalog->Write(pending);
    if (status.ok()) pending.clear();
  } else {
    // Rows move into a chunk and back on failure, so a large backlog is never copied.
    size_t done_executions = 0, done_task_runs = 0, done_events = 0;
    while (status.ok() && done_executions + done_task_runs + done_events < RowCount(pending)) {
      CatalogBatch chunk;
      size_t budget = kMaxRowsPerTransaction;
      TakeRows(pending.executions, done_executions, chunk.executions, budget);
      TakeRows(pending.task_runs, done_task_runs, chunk.task_runs, budget);
      TakeRows(pending.events, done_events, chunk.events, budget);
      status = catalog->Write(chunk);
      if (!status.ok()) {
        PutRowsBack(chunk.executions, pending.executions, done_executions);
        PutRowsBack(chunk.task_runs, pending.task_runs, done_task_runs);
        PutRowsBack(chunk.events, pending.events, done_events);
        break;
      }
      done_executions += chunk.executions.size();
      done_task_runs += chunk.task_runs.size();
      done_events += chunk.events.size();
    }
    EraseFront(pending.executions, done_executions);
    EraseFront(pending.task_runs, done_task_runs);
    EraseFront(pending.events, done_events);
  }
  // Slots moved or are gone; later rows for the same key are appended after, which keeps the
  // last one winning.
  task_run_slot.clear();
  pending_since = Clock::now();
  if (status.ok()) {
    bool recovered = failing;
    failing = false;
    failure_reported = false;
    retry_delay = kFirstRetryDelay;
    // Children that ended during the outage left their rows in the spool: deliver them now,
    // and leftovers that could not be delivered at the start, now that the catalog answers.
    if (recovered || (leftovers_waiting && !leftovers_retried)) {
      leftovers_retried = leftovers_waiting;
      ReplayLeftovers();
    }
    return;
  }
  OnWriteFailure(status);
}

void Recorder::Impl::ReplayLeftovers() {
  if (!spool) return;
  auto delivered = spool->ReplayLeftovers(*catalog, kMaxRowsPerTransaction);
  bool failed_before = leftovers_waiting;
  leftovers_waiting = !delivered.ok();
  if (leftovers_waiting && !failed_before) {
    std::fprintf(stderr, "fanout: could not deliver spooled catalog rows yet: %s\n",
                 delivered.status().ToString().c_str());
  }
}

void Recorder::Impl::OnWriteFailure(const Status& status) {
  failing = true;
  next_retry = Clock::now() + retry_delay;
  retry_delay = std::min<Clock::duration>(retry_delay * 2, kMaxRetryDelay);
  Status spooled = TrySpool();
  if (!failure_reported) {
    std::fprintf(stderr, "fanout: catalog write failed: %s; will retry%s\n",
                 status.ToString().c_str(),
                 spool && spooled.ok() ? (", keeping rows in " + spool->path()).c_str() : "");
    failure_reported = true;
  }
  if (!spooled.ok()) ReportSpoolFailure(spooled);
}

void Recorder::Impl::FlushSinks() {
  for (auto& sink : sinks) sink->Flush();
  sinks_dirty = false;
  last_sink_flush = Clock::now();
}

// When delivery must wake with nothing queued: the end of a gathering window (`gather`), else
// the sinks' next flush.
Clock::time_point Recorder::Impl::DeliveryDeadline(bool gather) const {
  Clock::time_point deadline = Clock::time_point::max();
  if (sinks_dirty) deadline = last_sink_flush + kSinkFlushInterval;
  if (gather) deadline = std::min(deadline, Clock::now() + kGatherDelay);
  return deadline;
}

Clock::time_point Recorder::Impl::WriteDeadline() const {
  if (failing) {
    // During an outage the thread also wakes every gathering window to move new rows to the
    // spool, so a crash then loses no more than it would with the catalog up.
    Clock::time_point spool_round = spool ? Clock::now() + kGatherDelay : Clock::time_point::max();
    return std::min(next_retry, spool_round);
  }
  if (RowCount(pending) > 0) return pending_since + kGatherDelay;
  return Clock::time_point::max();
}

// The catalog thread's end: the catalog is retried for a while before rows are left in the
// spool (or lost).
void Recorder::Impl::Shutdown() {
  Clock::time_point start = Clock::now();
  // Rows only in memory (no spool, or it could not be written) get 5 s even in a child.
  Clock::time_point spooled_give_up = start + shutdown_retry;
  Clock::time_point memory_give_up = start + std::max<Clock::duration>(shutdown_retry, 5s);
  auto done = [&] { return RowCount(pending) == 0 && !(spool && spool->holding()); };
  // Stopped, the run waits for no failing catalog: it had exited up to 10 s after a Ctrl-C (QA).
  // Rows that only memory holds still get their time.
  auto stopped = [&] { return stop_retrying && stop_retrying(); };
  for (;;) {
    if (done()) return;
    if (failing && stopped() && RowCount(pending) == 0) break;
    MaybeWriteCatalog(true);
    if (done()) return;
    Clock::time_point now = Clock::now();
    Clock::time_point end = RowCount(pending) > 0 ? memory_give_up : spooled_give_up;
    if (now >= end) break;
    // In short steps, so that a Ctrl-C during the wait is seen.
    std::this_thread::sleep_for(
        std::min<Clock::duration>({next_retry - now, end - now, Clock::duration(100ms)}));
    if (failing && stopped()) SpoolPending();
  }
  SpoolPending();
  if (spool && spool->holding()) {
    std::fprintf(stderr,
                 "fanout: catalog still unavailable; %zu rows are kept in %s and will be "
                 "delivered by the next `fanout run` that records to this catalog\n",
                 spool->rows_held(), spool->path().c_str());
  }
  if (RowCount(pending) > 0) {
    std::fprintf(stderr,
                 "fanout: catalog still unavailable; %zu rows were lost: they could not be "
                 "written%s\n",
                 RowCount(pending), spool ? " nor spooled" : "");
  }
}

}  // namespace fanout
