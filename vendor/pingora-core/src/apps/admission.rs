// Copyright 2025 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! How many HTTP/1 requests a worker thread works on at once (patched in).
//!
//! A thread that is behind (more requests have arrived than it can answer at once) otherwise
//! starts every request whose head has arrived before it finishes those it started: each one
//! allocates its state and sends its upstream request, and the answers wait in line behind
//! the next new requests. Hundreds of requests are then in progress at once, and their state
//! (request futures, buffers, header maps) no longer fits in the CPU's caches. With a bound,
//! a request beyond it waits, in arrival order, until one in progress ends, so the thread
//! finishes what it started first; nginx's event loop gets the same from its smaller state.
//!
//! The bound holds while the thread has other work. A thread about to park, having no task
//! to run, calls [`on_thread_park`]: its requests in progress all wait on I/O then, so none
//! counts any more, and up to `in_progress` of those waiting start instead of the thread
//! idling. So a thread with time to spare never leaves a request waiting.
//!
//! A request also counts against the bound for at most [`Admission::hold`]: one that lasts
//! longer (a slow upstream, a long download, a tunnel) stops counting, and the next may
//! start, even on a thread that never runs out of work.
//!
//! (Without the park hook, the hold alone let requests that each outlast it start at no
//! more than `in_progress / hold` per second and thread: about 10,700 with 32 and 2 ms, as
//! the timer rounds 2 ms up to 3. With 1,024 connections to an upstream that answers in
//! 20 ms, that was 0.31x nginx's requests/s, the thread half idle. Letting each request that
//! outlasts its hold start one more beyond the bound lifts that rate too, but a busy
//! thread's requests then outlast their holds in turn and the bound grows: at 1,024
//! connections, 1.5x-2x the 99th percentile latency and a third more memory.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The bound on the HTTP/1 requests a worker thread works on at once (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Requests a thread works on at once; the next waits for one of them to end.
    pub in_progress: usize,
    /// How long a request counts against `in_progress` at most.
    pub hold: Duration,
}

/// A request's place among those its thread works on; dropped when the request ends.
pub struct Permit {
    gate: Arc<Mutex<Gate>>,
    entry: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let head = {
            let mut gate = lock(&self.gate);
            gate.release(self.entry)
        };
        if let Some(waker) = head {
            waker.wake();
        }
    }
}

/// Waits for a place under `admission` on this thread.
pub fn admit(admission: Admission) -> Admit {
    Admit {
        gate: thread_gate(admission),
        waiter: None,
    }
}

/// The future of [`admit`].
pub struct Admit {
    gate: Arc<Mutex<Gate>>,
    /// The place in the gate's line, once this request waits.
    waiter: Option<u64>,
}

impl Future for Admit {
    type Output = Permit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let this = self.get_mut();
        let (taken, next) = {
            let mut gate = lock(&this.gate);
            let (taken, wake_next) = gate.poll_admit(&mut this.waiter, cx);
            let next = match wake_next {
                true => gate.waiters.front().map(|w| w.1.clone()),
                false => None,
            };
            (taken, next)
        };
        if let Some(waker) = next {
            waker.wake();
        }
        match taken {
            Some(entry) => Poll::Ready(Permit {
                gate: this.gate.clone(),
                entry,
            }),
            None => Poll::Pending,
        }
    }
}

impl Drop for Admit {
    fn drop(&mut self) {
        let Some(id) = self.waiter.take() else {
            return;
        };
        let next = {
            let mut gate = lock(&self.gate);
            let was_head = gate.waiters.front().map(|w| w.0) == Some(id);
            gate.waiters.retain(|w| w.0 != id);
            gate.drop_timer_if_unused();
            if was_head {
                gate.waiters.front().map(|w| w.1.clone())
            } else {
                None
            }
        };
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// Called by a worker thread just before it parks, having no task to run (patched into
/// pingora-runtime as `RuntimeOpts::on_thread_park`, and installed by the server on every
/// runtime it makes): the requests in progress on this thread all wait on I/O then, so none
/// counts any more, and up to `in_progress` of those waiting at its gates start instead of
/// the thread idling. A thread that never runs out of work keeps its bound.
pub fn on_thread_park() {
    let _ = GATES.try_with(|gates| {
        let Ok(gates) = gates.try_borrow() else {
            return;
        };
        for (_, gate) in gates.iter() {
            // Woken outside the lock; waking only schedules the waiting task.
            let head = lock(gate).idle();
            if let Some(waker) = head {
                waker.wake();
            }
        }
    });
}

/// A request admitted and not ended yet, or a free entry.
struct Entry {
    /// Tells this admission from earlier ones of the entry in `Gate::order`; 0: free.
    ticket: u64,
    start: Instant,
    /// Whether it counts against `in_progress` (admitted within the bound, hold not passed).
    counted: bool,
}

struct Gate {
    in_progress: usize,
    hold: Duration,
    entries: Vec<Entry>,
    free: Vec<usize>,
    /// Entries by admission, to find those whose hold passes; ended ones are skipped.
    order: VecDeque<(usize, u64)>,
    /// Entries that count against `in_progress`.
    counted: usize,
    next_ticket: u64,
    /// Requests waiting for a place, in arrival order.
    waiters: VecDeque<(u64, Waker)>,
    next_waiter: u64,
    /// Wakes the line's head when the oldest request's hold passes.
    timer: Option<Pin<Box<Sleep>>>,
    timer_waker: Waker,
}

impl Gate {
    fn new(admission: Admission, me: Weak<Mutex<Gate>>) -> Self {
        let in_progress = admission.in_progress.max(1);
        Gate {
            in_progress,
            hold: admission.hold,
            entries: Vec::with_capacity(in_progress),
            free: Vec::new(),
            order: VecDeque::with_capacity(in_progress),
            counted: 0,
            next_ticket: 1,
            waiters: VecDeque::new(),
            next_waiter: 1,
            timer: None,
            timer_waker: Waker::from(Arc::new(HeadWaker(me))),
        }
    }

    /// A place for the request waiting as `waiter` (`None`: not yet in line), or `None` and
    /// the request in line, to be woken when it may find one; and whether the next in line
    /// is to be woken now (one more may start).
    fn poll_admit(
        &mut self,
        waiter: &mut Option<u64>,
        cx: &mut Context<'_>,
    ) -> (Option<usize>, bool) {
        let now = Instant::now();
        if self.is_turn_of(*waiter) {
            if let Some(entry) = self.take(now) {
                return self.admitted(entry, waiter, now);
            }
        }
        match *waiter {
            Some(id) => {
                if let Some(line) = self.waiters.iter_mut().find(|w| w.0 == id) {
                    if !line.1.will_wake(cx.waker()) {
                        line.1 = cx.waker().clone();
                    }
                }
            }
            None => {
                let id = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.push_back((id, cx.waker().clone()));
                *waiter = Some(id);
            }
        }
        if self.is_turn_of(*waiter) && self.arm(now) {
            // The oldest request's hold passed meanwhile: this one starts in its stead.
            if let Some(entry) = self.take(now) {
                return self.admitted(entry, waiter, now);
            }
        }
        (None, false)
    }

    /// Whether the request waiting as `waiter` (`None`: not in line) may take a place now:
    /// nobody waits before it.
    fn is_turn_of(&self, waiter: Option<u64>) -> bool {
        self.waiters.front().map(|w| w.0) == waiter
    }

    /// `entry` taken by the request waiting as `waiter`: out of the line, and whether the
    /// next in line is to be woken.
    fn admitted(
        &mut self,
        entry: usize,
        waiter: &mut Option<u64>,
        now: Instant,
    ) -> (Option<usize>, bool) {
        if waiter.take().is_some() {
            self.waiters.pop_front();
        }
        self.drop_timer_if_unused();
        let wake_next = !self.waiters.is_empty() && (self.open() || self.arm(now));
        (Some(entry), wake_next)
    }

    /// With nobody in line, the timer goes: it belongs to the runtime it was made in, and
    /// the next wait may come from another.
    fn drop_timer_if_unused(&mut self) {
        if self.waiters.is_empty() {
            self.timer = None;
        }
    }

    /// Whether a request may start now.
    fn open(&self) -> bool {
        self.counted < self.in_progress
    }

    /// Requests whose hold passed by `now` stop counting.
    fn expire(&mut self, now: Instant) {
        while let Some(&(i, ticket)) = self.order.front() {
            let entry = &mut self.entries[i];
            if entry.ticket == ticket && now.saturating_duration_since(entry.start) < self.hold {
                break;
            }
            self.order.pop_front();
            if entry.ticket != ticket {
                // Ended within its hold.
                continue;
            }
            entry.counted = false;
            self.counted -= 1;
        }
    }

    /// An entry for a request starting now, if one may.
    fn take(&mut self, now: Instant) -> Option<usize> {
        self.expire(now);
        if !self.open() {
            return None;
        }
        self.counted += 1;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let entry = Entry {
            ticket,
            start: now,
            counted: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.order.push_back((i, ticket));
        Some(i)
    }

    /// While requests wait and none may start, keeps the timer set for when the oldest
    /// request's hold passes (or earlier); whether that time has come.
    fn arm(&mut self, now: Instant) -> bool {
        if self.waiters.is_empty() {
            return false;
        }
        self.expire(now);
        if self.open() {
            return true;
        }
        let Some(&(i, _)) = self.order.front() else {
            return false;
        };
        let due = self.entries[i].start + self.hold;
        // A new timer rather than `Sleep::reset`: a reset to a time the timer wheel has
        // passed wakes the waker already registered at once, and that one locks the gate,
        // which is locked here. A new timer has no waker yet; dropping one wakes nobody.
        let set = |t: &Pin<Box<Sleep>>| t.deadline() > now && t.deadline() <= due;
        if !self.timer.as_ref().is_some_and(set) {
            self.timer = None;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        // Registers the timer's own waker, which wakes whoever heads the line then. Polled
        // outside tokio's cooperative budget, which when spent would wake that waker at once.
        let mut cx = Context::from_waker(&self.timer_waker);
        Pin::new(&mut tokio::task::unconstrained(timer.as_mut()))
            .poll(&mut cx)
            .is_ready()
    }

    /// Its thread is about to idle: no request in progress counts any more. The line's head,
    /// to wake, if any request waits.
    fn idle(&mut self) -> Option<Waker> {
        let head = self.waiters.front()?.1.clone();
        for (i, ticket) in self.order.drain(..) {
            let entry = &mut self.entries[i];
            if entry.ticket == ticket {
                entry.counted = false;
            }
        }
        self.counted = 0;
        Some(head)
    }

    /// Ends the request holding entry `i`; the line's head, to wake if one may start now.
    fn release(&mut self, i: usize) -> Option<Waker> {
        let entry = &mut self.entries[i];
        entry.ticket = 0;
        if entry.counted {
            entry.counted = false;
            self.counted -= 1;
        }
        self.free.push(i);
        match self.open() {
            true => self.waiters.front().map(|w| w.1.clone()),
            false => None,
        }
    }
}

/// The timer's waker: wakes whichever request heads the line when the timer fires.
struct HeadWaker(Weak<Mutex<Gate>>);

impl Wake for HeadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(gate) = self.0.upgrade() else {
            return;
        };
        let head = lock(&gate).waiters.front().map(|w| w.1.clone());
        if let Some(waker) = head {
            waker.wake();
        }
    }
}

fn lock(gate: &Mutex<Gate>) -> MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    static GATES: std::cell::RefCell<Vec<(Admission, Arc<Mutex<Gate>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's gate for `admission` (one per distinct setting, usually one).
fn thread_gate(admission: Admission) -> Arc<Mutex<Gate>> {
    GATES.with(|gates| {
        let mut gates = gates.borrow_mut();
        if let Some((_, gate)) = gates.iter().find(|(a, _)| *a == admission) {
            return gate.clone();
        }
        // Gates of settings no longer in use (nothing waits at or holds them) go.
        gates.retain(|(_, gate)| Arc::strong_count(gate) > 1);
        let gate = Arc::new_cyclic(|me| Mutex::new(Gate::new(admission, me.clone())));
        gates.push((admission, gate.clone()));
        gate
    })
}
