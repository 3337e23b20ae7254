//! Model-based test: random sequences of operations on a growing tree of
//! contexts, checked after every step against a plain model of the tree.
//!
//! The model is deliberately naive: a `Vec` of nodes with a parent index, a
//! kind, the node's own deadline, its value, for a merged node the index of
//! its second parent and, for cancellable nodes, the reason it is done.
//! Every query walks the `Vec` towards the root. After each operation,
//! every context the test still holds is compared with the model:
//! `is_done`, `err`, `cause`, `deadline`, both value types, the `Display`
//! path and the state in `Debug`; every `after_func` registration has run
//! exactly as often as the model says (once iff its node became done while
//! alive and it was not stopped first), every held `Done` is ready exactly
//! when the model says, and `stop()` returns `true` iff the callback had
//! neither run nor been stopped.
//!
//! Merged nodes (`a.merge(&b)`) are cancellable children of `a` that are
//! also done when `b` is: the first reason to reach them wins (when both
//! parents are already done at the merge, `a`'s, as for any child of a done
//! parent), `deadline()` is the earlier of the two parents', values come
//! from `a` only, and `Display` nests `b`'s path as `.Merge(…)`.
//!
//! Liveness is part of the model: a node lives while a `Context` handle, its
//! `Canceller`, a `Done` made while it was live, a live descendant, or a
//! live merged node that has it as second parent (it holds a `Context` of
//! it) keeps it; when the last goes, its pending callbacks are dropped
//! without running (a forgotten cancel leaks nothing, as the crate docs
//! promise), even if an ancestor is cancelled later. The contract names the
//! node's own handles and a pending `Done`; that a live descendant keeps its
//! ancestors (so cancellation can reach it), that a `Done` made on an
//! already-done node holds only the error, and that a `Done` which resolved
//! still holds its node until dropped, are the crate's choices where the
//! contract leaves room, modelled as the crate makes them.
//!
//! Sequences are up to 60 steps: up to 30 that only grow the tree, then up
//! to 30 of anything, so cancels meet trees that have callbacks and waiters
//! in them. Indices count from the newest candidate, so chains are common
//! and a shrunk failure reads "0 = the newest". The `scenario_*` tests are
//! directed sequences, through the same checks, for corners that random
//! sequences reach only now and then (a node kept only by a `Done`, by a
//! child or by a merge, a callback discarded with its node, equal
//! deadlines, a merged node done through its second parent).
//!
//! `CTXTREE_VALGRIND=1` (scripts/valgrind.sh) shrinks the number of cases.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ctxtree::{AfterFunc, Canceller, Context, Done, Error};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

const HOUR: Duration = Duration::from_secs(3600);

/// The second value type, besides `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag(u8);

/// An exact deadline, relative to an `Instant` taken when the case starts.
#[derive(Debug, Clone, Copy)]
enum At {
    /// The case's start: already passed when used.
    Past,
    /// An hour and `n` seconds after the case's start; equal values test the
    /// "parent's deadline at or before" rule exactly.
    Hour(u8),
}

/// One step. Indices pick among the candidates of the step (held contexts,
/// held cancellers, registrations, held `Done`s) modulo their count,
/// counting from the newest (0 = the newest).
#[derive(Debug, Clone)]
enum Op {
    WithCancel(usize),
    /// `with_timeout(1 hour)`: never fires during the test.
    WithTimeout(usize),
    /// `with_timeout(Duration::ZERO)`: done at once.
    WithTimeoutZero(usize),
    WithDeadline(usize, At),
    WithValue(usize, u32),
    WithTag(usize, u8),
    WithoutCancel(usize),
    /// `a.merge(&b)` of two held contexts (possibly the same one).
    Merge(usize, usize),
    /// Cancels a held canceller, live or done.
    Cancel(usize),
    CancelWithCause(usize),
    /// Cancels the `k`-th nearest live node with a held canceller on the
    /// path from the newest held context up to the root (so subtrees with
    /// recent activity get cancelled), with a cause if the flag is set.
    CancelAncestor(usize, bool),
    DropContext(usize),
    DropCanceller(usize),
    /// Drops both the context handle and the canceller of one node.
    DropBoth(usize),
    AfterFunc(usize),
    Stop(usize),
    Done(usize),
    DropDone(usize),
}

/// Small indices (the newest candidates) are the most common.
fn index() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![6 => 0usize..2, 2 => 0usize..8, 1 => 0usize..64]
}

/// Growing the tree: derivations, callbacks and `Done`s, no cancel, no drop.
fn build_op() -> impl Strategy<Value = Op> {
    let i = index();
    prop_oneof![
        5 => i.clone().prop_map(Op::WithCancel),
        2 => i.clone().prop_map(Op::WithTimeout),
        2 => (i.clone(), (0u8..3).prop_map(At::Hour)).prop_map(|(i, at)| Op::WithDeadline(i, at)),
        2 => (i.clone(), any::<u32>()).prop_map(|(i, v)| Op::WithValue(i, v)),
        1 => (i.clone(), any::<u8>()).prop_map(|(i, v)| Op::WithTag(i, v)),
        1 => i.clone().prop_map(Op::WithoutCancel),
        3 => (i.clone(), i.clone()).prop_map(|(a, b)| Op::Merge(a, b)),
        4 => i.clone().prop_map(Op::AfterFunc),
        1 => i.prop_map(Op::Done),
    ]
}

/// Any step.
fn op_strategy() -> impl Strategy<Value = Op> {
    let i = index();
    let at = prop_oneof![Just(At::Past), (0u8..3).prop_map(At::Hour)];
    prop_oneof![
        5 => i.clone().prop_map(Op::WithCancel),
        2 => i.clone().prop_map(Op::WithTimeout),
        1 => i.clone().prop_map(Op::WithTimeoutZero),
        2 => (i.clone(), at).prop_map(|(i, at)| Op::WithDeadline(i, at)),
        2 => (i.clone(), any::<u32>()).prop_map(|(i, v)| Op::WithValue(i, v)),
        1 => (i.clone(), any::<u8>()).prop_map(|(i, v)| Op::WithTag(i, v)),
        1 => i.clone().prop_map(Op::WithoutCancel),
        2 => (i.clone(), i.clone()).prop_map(|(a, b)| Op::Merge(a, b)),
        1 => i.clone().prop_map(Op::Cancel),
        1 => i.clone().prop_map(Op::CancelWithCause),
        3 => (i.clone(), any::<bool>()).prop_map(|(i, c)| Op::CancelAncestor(i, c)),
        2 => i.clone().prop_map(Op::DropContext),
        1 => i.clone().prop_map(Op::DropCanceller),
        3 => i.clone().prop_map(Op::DropBoth),
        6 => i.clone().prop_map(Op::AfterFunc),
        1 => i.clone().prop_map(Op::Stop),
        2 => i.clone().prop_map(Op::Done),
        1 => i.prop_map(Op::DropDone),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Cancel,
    Value,
    Detached,
}

/// Why a cancellable node is done: the error, and the cause's message if a
/// cause was given.
type Reason = (Error, Option<String>);

struct ModelNode {
    parent: Option<usize>,
    kind: Kind,
    /// A cancellable node's own deadline, only if it is in force (strictly
    /// earlier than the parent's).
    own_deadline: Option<Instant>,
    value: Option<u32>,
    tag: Option<Tag>,
    /// A merged node's second parent (the `other` of `merge`).
    second: Option<usize>,
    /// A cancellable node's state; `None` while live.
    done: Option<Reason>,
    ctx_held: bool,
    canceller_held: bool,
    dones_held: usize,
    alive: bool,
}

struct Registration {
    counter: Arc<AtomicUsize>,
    handle: AfterFunc,
    /// The cancellable node the callback is registered with, if any.
    anchor: Option<usize>,
    ran: bool,
    stopped: bool,
    /// Its node was dropped while it was pending: it never runs.
    discarded: bool,
}

struct HeldDone {
    /// The node whose state the `Done` reports.
    anchor: Option<usize>,
    /// The node it keeps alive: its anchor if that was live when `done()`
    /// was called (a `Done` of a done node holds only the error).
    holds: Option<usize>,
    done: Option<Done>,
    resolved: bool,
}

/// The crate's objects, indexed like the model's nodes, and the model.
struct Harness {
    base: Instant,
    nodes: Vec<ModelNode>,
    ctxs: Vec<Option<Context>>,
    cancellers: Vec<Option<Canceller>>,
    regs: Vec<Registration>,
    dones: Vec<HeldDone>,
    causes: usize,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

impl Harness {
    fn new() -> Harness {
        let root = |ctx: Context| {
            (
                ModelNode {
                    parent: None,
                    kind: Kind::Root,
                    own_deadline: None,
                    value: None,
                    tag: None,
                    second: None,
                    done: None,
                    ctx_held: true,
                    canceller_held: false,
                    dones_held: 0,
                    alive: true,
                },
                Some(ctx),
            )
        };
        let (n0, c0) = root(Context::background());
        let (n1, c1) = root(Context::todo());
        Harness {
            base: Instant::now(),
            nodes: vec![n0, n1],
            ctxs: vec![c0, c1],
            cancellers: vec![None, None],
            regs: Vec::new(),
            dones: Vec::new(),
            causes: 0,
        }
    }

    // ---- model queries: plain walks towards the root ----

    /// The nearest cancellable node at or above `i`, stopping at a root or a
    /// `without_cancel`.
    fn anchor(&self, mut i: usize) -> Option<usize> {
        loop {
            match self.nodes[i].kind {
                Kind::Cancel => return Some(i),
                Kind::Root | Kind::Detached => return None,
                Kind::Value => i = self.nodes[i].parent?,
            }
        }
    }

    fn state(&self, i: usize) -> Option<Reason> {
        self.anchor(i).and_then(|a| self.nodes[a].done.clone())
    }

    /// The earliest own deadline on the path up to a root or a
    /// `without_cancel`; for a merged node, the earlier of its two parents'.
    fn deadline(&self, i: usize) -> Option<Instant> {
        let node = &self.nodes[i];
        let parent = || node.parent.expect("only roots have no parent");
        match node.kind {
            Kind::Root | Kind::Detached => None,
            Kind::Value => self.deadline(parent()),
            Kind::Cancel => [
                self.deadline(parent()),
                node.own_deadline,
                node.second.and_then(|s| self.deadline(s)),
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    fn value(&self, mut i: usize) -> Option<u32> {
        loop {
            if let Some(v) = self.nodes[i].value {
                return Some(v);
            }
            i = self.nodes[i].parent?;
        }
    }

    fn tag(&self, mut i: usize) -> Option<Tag> {
        loop {
            if let Some(v) = self.nodes[i].tag {
                return Some(v);
            }
            i = self.nodes[i].parent?;
        }
    }

    /// The expected `Display`: the path from the root, as Go's `String()`,
    /// with a merged node's second parent's path nested in `.Merge(…)`.
    /// A deadline segment is `None`: it prints the time left, which moves.
    fn display(&self, i: usize) -> Vec<Option<String>> {
        let node = &self.nodes[i];
        let mut path = match node.parent {
            Some(p) => self.display(p),
            None => Vec::new(),
        };
        match node.kind {
            Kind::Root if i == 0 => path.push(Some("context.Background".to_string())),
            Kind::Root => path.push(Some("context.TODO".to_string())),
            Kind::Cancel => match node.second {
                Some(s) => {
                    path.push(Some(".Merge(".to_string()));
                    path.extend(self.display(s));
                    path.push(Some(")".to_string()));
                }
                None if node.own_deadline.is_some() => path.push(None),
                None => path.push(Some(".WithCancel".to_string())),
            },
            Kind::Value if node.value.is_some() => path.push(Some(".WithValue(u32)".to_string())),
            Kind::Value => path.push(Some(format!(
                ".WithValue({})",
                std::any::type_name::<Tag>()
            ))),
            Kind::Detached => path.push(Some(".WithoutCancel".to_string())),
        }
        path
    }

    // ---- model updates ----

    /// Marks cancellable node `i` done for `reason` unless it already is,
    /// then brings every descendant in line (children have larger indices,
    /// so one pass in index order reaches grandchildren too; so do merged
    /// nodes, whose second parent is older than they are too), and runs
    /// the callbacks of every node that became done.
    fn model_cancel(&mut self, i: usize, reason: Reason) {
        if self.nodes[i].done.is_some() {
            return;
        }
        self.nodes[i].done = Some(reason);
        let mut newly = vec![i];
        for j in i + 1..self.nodes.len() {
            if self.nodes[j].kind != Kind::Cancel || self.nodes[j].done.is_some() {
                continue;
            }
            let parent = self.nodes[j].parent.expect("derived node");
            let second = self.nodes[j].second;
            // Only one cancel happens per step: if both parents of a merged
            // node became done in it, they did with the same reason.
            let reached = self
                .state(parent)
                .or_else(|| second.and_then(|s| self.state(s)));
            if let Some(reason) = reached {
                self.nodes[j].done = Some(reason);
                newly.push(j);
            }
        }
        for reg in &mut self.regs {
            if let Some(a) = reg.anchor {
                if newly.contains(&a) && !reg.ran && !reg.stopped && !reg.discarded {
                    reg.ran = true;
                }
            }
        }
    }

    /// Recomputes which nodes are alive; pending callbacks of nodes that
    /// just died are discarded.
    fn model_liveness(&mut self) {
        let n = self.nodes.len();
        let mut child_alive = vec![false; n];
        let mut alive = vec![false; n];
        for j in (0..n).rev() {
            let node = &self.nodes[j];
            alive[j] = node.kind == Kind::Root
                || node.ctx_held
                || node.canceller_held
                || node.dones_held > 0
                || child_alive[j];
            if alive[j] {
                // A merged node holds a `Context` of its second parent
                // (older than it, like its parent).
                for p in [node.parent, node.second].into_iter().flatten() {
                    child_alive[p] = true;
                }
            }
        }
        for (j, now_alive) in alive.into_iter().enumerate() {
            let was_alive = self.nodes[j].alive;
            assert!(was_alive || !now_alive, "model: node {j} came back to life");
            if was_alive && !now_alive {
                self.nodes[j].alive = false;
                for reg in &mut self.regs {
                    if reg.anchor == Some(j) && !reg.ran && !reg.stopped {
                        reg.discarded = true;
                    }
                }
            }
        }
    }

    fn held_contexts(&self) -> Vec<usize> {
        (0..self.ctxs.len())
            .filter(|&i| self.ctxs[i].is_some())
            .collect()
    }

    fn held_cancellers(&self) -> Vec<usize> {
        (0..self.cancellers.len())
            .filter(|&i| self.cancellers[i].is_some())
            .collect()
    }

    /// The `k`-th most recent candidate (modulo their count): small `k`
    /// are generated more often, so chains and deep trees are common, and a
    /// shrunk sequence reads "0 = the newest".
    fn pick(candidates: &[usize], k: usize) -> Option<usize> {
        let n = candidates.len();
        (n > 0).then(|| candidates[n - 1 - k % n])
    }

    fn ctx(&self, i: usize) -> &Context {
        self.ctxs[i].as_ref().expect("held")
    }

    fn push_node(&mut self, node: ModelNode, ctx: Context, canceller: Option<Canceller>) {
        self.nodes.push(node);
        self.ctxs.push(Some(ctx));
        self.cancellers.push(canceller);
    }

    fn new_node(parent: usize, kind: Kind) -> ModelNode {
        ModelNode {
            parent: Some(parent),
            kind,
            own_deadline: None,
            value: None,
            tag: None,
            second: None,
            done: None,
            ctx_held: true,
            canceller_held: kind == Kind::Cancel,
            dones_held: 0,
            alive: true,
        }
    }

    /// Derives a cancellable child; `expires` says whether its own deadline
    /// (if in force) has passed by the time it is armed.
    fn derive_cancel(&mut self, p: usize, how: Derive) -> Result<(), TestCaseError> {
        let parent_deadline = self.deadline(p);
        let parent_state = self.state(p);
        let ctx = self.ctx(p).clone();
        let before = Instant::now();
        let (child, canceller) = match how {
            Derive::Cancel => ctx.with_cancel(),
            Derive::Timeout(t) => ctx.with_timeout(t),
            Derive::Deadline(d) => ctx.with_deadline(d),
        };
        let after = Instant::now();
        let mut node = Self::new_node(p, Kind::Cancel);
        let (own, expires) = match how {
            Derive::Cancel => (None, false),
            Derive::Deadline(d) => {
                let in_force = match parent_deadline {
                    Some(pd) => d < pd,
                    None => true,
                };
                (in_force.then_some(d), d <= before)
            }
            Derive::Timeout(t) => {
                // `with_timeout` reads the clock itself: its deadline lies in
                // [before + t, after + t], capped by the parent's. Read it back
                // once, check the bounds, then compare exactly from here on.
                let observed = child
                    .deadline()
                    .ok_or_else(|| fail(format!("with_timeout({t:?}) has no deadline")))?;
                let cap = |x: Instant| parent_deadline.map_or(x, |pd| pd.min(x));
                let (lo, hi) = (cap(before + t), cap(after + t));
                prop_assert!(
                    lo <= observed && observed <= hi,
                    "with_timeout({:?}) deadline out of bounds",
                    t
                );
                let in_force = match parent_deadline {
                    Some(pd) => observed < pd,
                    None => true,
                };
                (in_force.then_some(observed), t.is_zero())
            }
        };
        node.own_deadline = own;
        // First reason wins: a done parent's, then a passed deadline.
        if let Some(reason) = parent_state {
            node.done = Some(reason);
        } else if expires {
            prop_assert!(
                own.is_some(),
                "model: a passed deadline must be earlier than a live parent's"
            );
            node.done = Some((Error::DeadlineExceeded, None));
        }
        self.push_node(node, child, Some(canceller));
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let held = self.held_contexts();
        match *op {
            Op::WithCancel(k) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                self.derive_cancel(p, Derive::Cancel)?;
            }
            Op::WithTimeout(k) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                self.derive_cancel(p, Derive::Timeout(HOUR))?;
            }
            Op::WithTimeoutZero(k) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                self.derive_cancel(p, Derive::Timeout(Duration::ZERO))?;
            }
            Op::WithDeadline(k, at) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                let d = match at {
                    At::Past => self.base,
                    At::Hour(s) => self.base + HOUR + Duration::from_secs(u64::from(s)),
                };
                self.derive_cancel(p, Derive::Deadline(d))?;
            }
            Op::WithValue(k, v) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                let child = self.ctx(p).with_value(v);
                let mut node = Self::new_node(p, Kind::Value);
                node.value = Some(v);
                self.push_node(node, child, None);
            }
            Op::WithTag(k, v) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                let child = self.ctx(p).with_value(Tag(v));
                let mut node = Self::new_node(p, Kind::Value);
                node.tag = Some(Tag(v));
                self.push_node(node, child, None);
            }
            Op::WithoutCancel(k) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                let child = self.ctx(p).without_cancel();
                self.push_node(Self::new_node(p, Kind::Detached), child, None);
            }
            Op::Merge(k, o) => {
                let p = Self::pick(&held, k).expect("roots are always held");
                let s = Self::pick(&held, o).expect("roots are always held");
                let (child, canceller) = self.ctx(p).merge(self.ctx(s));
                let mut node = Self::new_node(p, Kind::Cancel);
                node.second = Some(s);
                // Born done if either parent is; the first parent's reason
                // if both are.
                node.done = self.state(p).or_else(|| self.state(s));
                self.push_node(node, child, Some(canceller));
            }
            Op::Cancel(k) | Op::CancelWithCause(k) | Op::CancelAncestor(k, _) => {
                let picked = if let Op::CancelAncestor(..) = op {
                    // Nearest first, then `pick` counts from the end.
                    let mut path = Vec::new();
                    let mut cur = held.last().copied();
                    while let Some(i) = cur {
                        if self.cancellers[i].is_some() && self.nodes[i].done.is_none() {
                            path.push(i);
                        }
                        cur = self.nodes[i].parent;
                    }
                    path.reverse();
                    Self::pick(&path, k)
                } else {
                    Self::pick(&self.held_cancellers(), k)
                };
                let Some(i) = picked else {
                    return Ok(());
                };
                let canceller = self.cancellers[i].as_ref().expect("held");
                let msg = if matches!(op, Op::CancelWithCause(_) | Op::CancelAncestor(_, true)) {
                    self.causes += 1;
                    let msg = format!("cause #{} of node {i}", self.causes);
                    canceller.cancel_with_cause(Arc::new(io::Error::other(msg.clone())));
                    Some(msg)
                } else {
                    canceller.cancel();
                    None
                };
                self.model_cancel(i, (Error::Canceled, msg));
            }
            Op::DropContext(k) => {
                let non_roots: Vec<usize> = held.into_iter().filter(|&i| i >= 2).collect();
                let Some(i) = Self::pick(&non_roots, k) else {
                    return Ok(());
                };
                self.ctxs[i] = None;
                self.nodes[i].ctx_held = false;
                self.model_liveness();
            }
            Op::DropCanceller(k) => {
                let Some(i) = Self::pick(&self.held_cancellers(), k) else {
                    return Ok(());
                };
                self.cancellers[i] = None;
                self.nodes[i].canceller_held = false;
                self.model_liveness();
            }
            Op::DropBoth(k) => {
                let Some(i) = Self::pick(&self.held_cancellers(), k) else {
                    return Ok(());
                };
                self.cancellers[i] = None;
                self.nodes[i].canceller_held = false;
                self.ctxs[i] = None;
                self.nodes[i].ctx_held = false;
                self.model_liveness();
            }
            Op::AfterFunc(k) => {
                let i = Self::pick(&held, k).expect("roots are always held");
                let counter = Arc::new(AtomicUsize::new(0));
                let c = counter.clone();
                let handle = self.ctx(i).after_func(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                });
                let anchor = self.anchor(i);
                // Already done: runs at once, on this thread.
                let ran = anchor.is_some_and(|a| self.nodes[a].done.is_some());
                self.regs.push(Registration {
                    counter,
                    handle,
                    anchor,
                    ran,
                    stopped: false,
                    discarded: false,
                });
            }
            Op::Stop(k) => {
                if self.regs.is_empty() {
                    return Ok(());
                }
                let n = self.regs.len();
                let r = n - 1 - k % n;
                let reg = &mut self.regs[r];
                let expected = !reg.ran && !reg.stopped;
                let got = reg.handle.stop();
                prop_assert_eq!(
                    got,
                    expected,
                    "stop() of registration {} (ran: {}, stopped: {})",
                    r,
                    reg.ran,
                    reg.stopped
                );
                if expected {
                    reg.stopped = true;
                }
            }
            Op::Done(k) => {
                let i = Self::pick(&held, k).expect("roots are always held");
                let done = self.ctx(i).done();
                let anchor = self.anchor(i);
                let holds = anchor.filter(|&a| self.nodes[a].done.is_none());
                if let Some(a) = holds {
                    self.nodes[a].dones_held += 1;
                }
                self.dones.push(HeldDone {
                    anchor,
                    holds,
                    done: Some(done),
                    resolved: false,
                });
            }
            Op::DropDone(k) => {
                let held: Vec<usize> = (0..self.dones.len())
                    .filter(|&d| self.dones[d].done.is_some())
                    .collect();
                let Some(d) = Self::pick(&held, k) else {
                    return Ok(());
                };
                self.dones[d].done = None;
                if let Some(a) = self.dones[d].holds {
                    self.nodes[a].dones_held -= 1;
                }
                self.model_liveness();
            }
        }
        Ok(())
    }

    /// Compares every held object with the model.
    fn check(&mut self) -> Result<(), TestCaseError> {
        for i in self.held_contexts() {
            let ctx = self.ctx(i);
            let state = self.state(i);
            let err = state.as_ref().map(|(e, _)| *e);
            prop_assert_eq!(ctx.err(), err, "err() of node {}", i);
            prop_assert_eq!(ctx.is_done(), err.is_some(), "is_done() of node {}", i);
            match (&state, ctx.cause()) {
                (None, None) => {}
                (None, Some(c)) => return Err(fail(format!("node {i} is live but has cause {c}"))),
                (Some(_), None) => return Err(fail(format!("node {i} is done but has no cause"))),
                (Some((_, Some(msg))), Some(c)) => {
                    prop_assert_eq!(&c.to_string(), msg, "cause() of node {}", i);
                }
                (Some((e, None)), Some(c)) => {
                    prop_assert_eq!(c.to_string(), e.to_string(), "cause() of node {}", i);
                    prop_assert_eq!(
                        c.downcast_ref::<Error>(),
                        Some(e),
                        "cause() of node {} is the Error",
                        i
                    );
                }
            }
            prop_assert_eq!(ctx.deadline(), self.deadline(i), "deadline() of node {}", i);
            prop_assert_eq!(
                ctx.value::<u32>().copied(),
                self.value(i),
                "value::<u32>() of node {}",
                i
            );
            prop_assert_eq!(
                ctx.value::<Tag>().copied(),
                self.tag(i),
                "value::<Tag>() of node {}",
                i
            );
            let shown = ctx.to_string();
            prop_assert!(
                display_matches(&shown, &self.display(i)),
                "Display of node {}: {:?}, model {:?}",
                i,
                shown,
                self.display(i)
            );
            let debug = format!("{ctx:?}");
            let state_text = err.map_or("live".to_string(), |e| e.to_string());
            prop_assert!(
                blank_deadlines(&debug).contains(&blank_deadlines(&shown))
                    && debug.contains(&state_text),
                "Debug of node {}: {:?}, want the path and {:?}",
                i,
                debug,
                state_text
            );
        }
        for (r, reg) in self.regs.iter().enumerate() {
            let runs = reg.counter.load(Ordering::SeqCst);
            prop_assert_eq!(
                runs,
                usize::from(reg.ran),
                "runs of registration {} on node {:?} (stopped: {}, discarded: {})",
                r,
                reg.anchor,
                reg.stopped,
                reg.discarded
            );
        }
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for (d, held) in self.dones.iter_mut().enumerate() {
            let Some(done) = held.done.as_mut() else {
                continue;
            };
            let expected = held
                .anchor
                .and_then(|a| self.nodes[a].done.clone())
                .map(|(e, _)| e);
            if held.resolved {
                // Fused: not polled again; the node stays done.
                prop_assert!(futures::future::FusedFuture::is_terminated(done));
                prop_assert!(
                    expected.is_some(),
                    "Done #{} resolved but its node is live",
                    d
                );
                continue;
            }
            prop_assert!(!futures::future::FusedFuture::is_terminated(done));
            match (Pin::new(&mut *done).poll(&mut cx), expected) {
                (Poll::Pending, None) => {}
                (Poll::Ready(got), Some(e)) => {
                    prop_assert_eq!(got, e, "Done #{} resolved with the wrong error", d);
                    held.resolved = true;
                }
                (got, e) => {
                    return Err(fail(format!("Done #{d} polled {got:?}, model says {e:?}")))
                }
            }
        }
        Ok(())
    }

    /// Drops every handle, then checks that nothing ran that should not
    /// have, and that `stop()` agrees with what ran.
    fn finish(mut self) -> Result<(), TestCaseError> {
        for i in 0..self.nodes.len() {
            self.nodes[i].ctx_held = self.nodes[i].kind == Kind::Root;
            self.nodes[i].canceller_held = false;
            self.nodes[i].dones_held = 0;
            if i >= 2 {
                self.ctxs[i] = None;
            }
            self.cancellers[i] = None;
        }
        self.dones.clear();
        self.model_liveness();
        for (r, reg) in self.regs.iter().enumerate() {
            prop_assert_eq!(
                reg.counter.load(Ordering::SeqCst),
                usize::from(reg.ran),
                "runs of registration {} after dropping the tree",
                r
            );
            let expected = !reg.ran && !reg.stopped;
            prop_assert_eq!(
                reg.handle.stop(),
                expected,
                "final stop() of registration {}",
                r
            );
            prop_assert!(!reg.handle.stop(), "second stop() of registration {}", r);
        }
        Ok(())
    }
}

/// Whether `shown` is the path `expected`, a `None` segment standing for
/// `.WithDeadline(<anything without parentheses>)`.
fn display_matches(shown: &str, expected: &[Option<String>]) -> bool {
    let mut rest = shown;
    for seg in expected {
        match seg {
            Some(lit) => match rest.strip_prefix(lit.as_str()) {
                Some(r) => rest = r,
                None => return false,
            },
            None => {
                let Some(r) = rest.strip_prefix(".WithDeadline(") else {
                    return false;
                };
                let Some(close) = r.find(')') else {
                    return false;
                };
                if r[..close].is_empty() || r[..close].contains('(') {
                    return false;
                }
                rest = &r[close + 1..];
            }
        }
    }
    rest.is_empty()
}

/// `s` with the time left of every `.WithDeadline(…)` blanked out.
fn blank_deadlines(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(".WithDeadline(") {
        let open = at + ".WithDeadline(".len();
        out.push_str(&rest[..open]);
        let close = rest[open..].find(')').map_or(rest.len(), |c| open + c);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Copy)]
enum Derive {
    Cancel,
    Timeout(Duration),
    Deadline(Instant),
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    h.check()?;
    for (step, op) in ops.iter().enumerate() {
        h.apply(op)
            .map_err(|e| fail(format!("step {step} ({op:?}): {e}")))?;
        h.check()
            .map_err(|e| fail(format!("after step {step} ({op:?}): {e}")))?;
    }
    h.finish()
}

/// Up to 60 steps: a first half that only grows the tree (so that cancels
/// meet a tree with callbacks and waiters in it, rather than cutting every
/// sequence short), then anything.
fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    (
        prop::collection::vec(build_op(), 0..=30),
        prop::collection::vec(op_strategy(), 1..=30),
    )
        .prop_map(|(mut ops, rest)| {
            ops.extend(rest);
            ops
        })
}

/// 256 cases (proptest's default), or `PROPTEST_CASES` if set; 16 under
/// valgrind.
fn cases() -> u32 {
    if std::env::var_os("CTXTREE_VALGRIND").is_some() {
        16
    } else if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default().cases
    } else {
        256
    }
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // No regression files: this checkout takes only the files we name.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn tree_matches_model(ops in ops_strategy()) {
        run_case(&ops)?;
    }
}

/// The model itself, on a hand-written sequence, so that a broken model
/// cannot pass silently: every kind of operation, with known outcomes.
#[test]
fn model_smoke() {
    // Indices count from the newest candidate.
    let ops = [
        Op::WithTimeout(1),     // node 2: deadline child of background
        Op::WithValue(0, 7),    // node 3: value under 2
        Op::WithCancel(0),      // node 4: cancel under the value
        Op::WithoutCancel(0),   // node 5: detached
        Op::WithCancel(0),      // node 6: below the detached
        Op::AfterFunc(2),       // registration 0, on node 4
        Op::AfterFunc(0),       // registration 1, on node 6
        Op::AfterFunc(1),       // registration 2, on the detached: never runs
        Op::Done(2),            // a Done of node 4
        Op::CancelWithCause(2), // cancels node 2 (held cancellers: 2, 4, 6)
    ];
    let mut h = Harness::new();
    for op in &ops {
        h.apply(op).unwrap();
        h.check().unwrap();
    }
    assert_eq!(h.ctx(4).err(), Some(Error::Canceled));
    assert_eq!(h.ctx(4).cause().unwrap().to_string(), "cause #1 of node 2");
    assert_eq!(h.ctx(4).value::<u32>(), Some(&7));
    assert!(!h.ctx(5).is_done());
    assert!(!h.ctx(6).is_done());
    assert!(h.ctx(4).deadline().is_some());
    assert!(h.ctx(6).deadline().is_none());
    assert_eq!(h.regs[0].counter.load(Ordering::SeqCst), 1);
    assert_eq!(h.regs[1].counter.load(Ordering::SeqCst), 0);
    assert_eq!(h.regs[2].counter.load(Ordering::SeqCst), 0);
    assert!(h.dones[0].resolved);
    h.finish().unwrap();
}

/// Runs `ops` on a fresh harness, checking against the model after every
/// step; returns the harness for explicit assertions.
fn steps(ops: &[Op]) -> Harness {
    let mut h = Harness::new();
    for (step, op) in ops.iter().enumerate() {
        if let Err(e) = h.apply(op).and_then(|()| h.check()) {
            panic!("step {step} ({op:?}): {e}");
        }
    }
    h
}

fn runs(h: &Harness, reg: usize) -> usize {
    h.regs[reg].counter.load(Ordering::SeqCst)
}

// Directed sequences for the corners that random sequences reach rarely.
// Each is checked against the model after every step, and its outcome is
// also asserted outright, so the model cannot drift with the crate.

/// A pending `Done` alone keeps a node (and its callbacks) in the tree.
#[test]
fn scenario_done_keeps_node_linked() {
    let h = steps(&[
        Op::WithCancel(1),           // node 2, under background
        Op::WithCancel(0),           // node 3, under 2
        Op::AfterFunc(0),            // registration 0, on 3
        Op::Done(0),                 // a Done of 3
        Op::DropBoth(0),             // 3: only the Done is left
        Op::CancelAncestor(0, true), // cancels 2
    ]);
    assert_eq!(runs(&h, 0), 1);
    assert!(h.dones[0].resolved);
    h.finish().unwrap();
}

/// A live child keeps its parent, whose handles are all gone, in the tree.
#[test]
fn scenario_child_keeps_parent_linked() {
    let h = steps(&[
        Op::WithCancel(1),            // node 2
        Op::WithCancel(0),            // node 3, under 2
        Op::WithCancel(0),            // node 4, under 3
        Op::AfterFunc(1),             // registration 0, on 3
        Op::DropBoth(1),              // 3: kept by 4 only
        Op::CancelAncestor(1, false), // path from 4: live cancellers 4, 2 -> 2
    ]);
    assert_eq!(runs(&h, 0), 1);
    assert_eq!(h.ctx(4).err(), Some(Error::Canceled));
    h.finish().unwrap();
}

/// A node whose every handle is gone leaves the tree: its pending callback
/// is dropped unrun, even when an ancestor is cancelled later, and `stop()`
/// then returns `true`.
#[test]
fn scenario_dropped_node_discards_callbacks() {
    let h = steps(&[
        Op::WithCancel(1),            // node 2
        Op::WithCancel(0),            // node 3, under 2
        Op::AfterFunc(0),             // registration 0, on 3
        Op::DropBoth(0),              // 3 is gone
        Op::CancelAncestor(0, false), // cancels 2
    ]);
    assert_eq!(runs(&h, 0), 0);
    assert!(h.regs[0].discarded);
    assert!(h.ctx(2).is_done());
    h.finish().unwrap();
}

/// A callback registered through a value node lives on the value node's
/// cancellable ancestor: dropping the value node does not discard it.
#[test]
fn scenario_value_callback_lives_on_anchor() {
    let h = steps(&[
        Op::WithCancel(1),   // node 2
        Op::WithValue(0, 5), // node 3, value under 2
        Op::AfterFunc(0),    // registration 0, through 3, on 2
        Op::DropContext(0),  // 3 is gone
        Op::Cancel(0),       // cancels 2
    ]);
    assert_eq!(runs(&h, 0), 1);
    h.finish().unwrap();
}

/// `with_deadline` at or after the parent's deadline behaves as
/// `with_cancel`; an earlier one is the child's own.
#[test]
fn scenario_deadline_at_or_after_parent_is_with_cancel() {
    let h = steps(&[
        Op::WithDeadline(1, At::Hour(1)), // node 2: own deadline
        Op::WithDeadline(0, At::Hour(1)), // node 3: equal, so with_cancel
        Op::WithDeadline(0, At::Hour(2)), // node 4: later, so with_cancel
        Op::WithDeadline(0, At::Hour(0)), // node 5: earlier, its own
        Op::WithTimeout(0),               // node 6: later, so with_cancel
    ]);
    let d1 = h.base + HOUR + Duration::from_secs(1);
    let d0 = h.base + HOUR;
    for i in [2, 3, 4] {
        assert_eq!(h.ctx(i).deadline(), Some(d1), "node {i}");
    }
    for i in [5, 6] {
        assert_eq!(h.ctx(i).deadline(), Some(d0), "node {i}");
    }
    assert!(h.ctx(4).to_string().ends_with(".WithCancel.WithCancel"));
    assert!(h.ctx(6).to_string().ends_with(".WithCancel"));
    h.finish().unwrap();
}

/// The first reason wins: a deadline already passed, then a cancel with a
/// cause, changes nothing; children are born done with the first reason.
#[test]
fn scenario_first_reason_wins() {
    let h = steps(&[
        Op::WithTimeoutZero(1),        // node 2: done, DeadlineExceeded
        Op::CancelWithCause(0),        // too late
        Op::WithCancel(0),             // node 3: born done
        Op::WithDeadline(0, At::Past), // node 4: born done, parent's reason
        Op::AfterFunc(0),              // registration 0: runs at once
        Op::Stop(0),                   // false: it ran
    ]);
    for i in [2, 3, 4] {
        assert_eq!(h.ctx(i).err(), Some(Error::DeadlineExceeded), "node {i}");
    }
    assert_eq!(runs(&h, 0), 1);
    h.finish().unwrap();
}

/// `without_cancel` cuts cancellation, deadlines and causes, not values.
#[test]
fn scenario_without_cancel_cuts_cancellation() {
    let h = steps(&[
        Op::WithTimeout(1),   // node 2: deadline
        Op::WithValue(0, 9),  // node 3
        Op::WithoutCancel(0), // node 4
        Op::WithCancel(0),    // node 5, below the detached
        Op::AfterFunc(0),     // registration 0, on 5
        Op::AfterFunc(1),     // registration 1, on 4: never runs
        Op::Cancel(1),        // held cancellers 2, 5 -> 2
        Op::Cancel(0),        // 5
    ]);
    assert!(h.ctx(3).is_done());
    assert!(!h.ctx(4).is_done());
    assert_eq!(h.ctx(4).deadline(), None);
    assert_eq!(h.ctx(5).value::<u32>(), Some(&9));
    assert_eq!(
        h.ctx(5).cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert_eq!((runs(&h, 0), runs(&h, 1)), (1, 0));
    h.finish().unwrap();
}

/// A child derived from a done node, through a value node, carries the
/// parent's error and cause; a passed deadline does not override them.
#[test]
fn scenario_born_done_inherits_cause() {
    let h = steps(&[
        Op::WithCancel(1),             // node 2
        Op::WithValue(0, 1),           // node 3
        Op::CancelWithCause(0),        // 2, "cause #1 of node 2"
        Op::WithCancel(0),             // node 4, from 3: born done
        Op::WithDeadline(1, At::Past), // node 5, from 3: born done, Canceled
    ]);
    for i in [2, 3, 4, 5] {
        assert_eq!(h.ctx(i).err(), Some(Error::Canceled), "node {i}");
        assert_eq!(
            h.ctx(i).cause().unwrap().to_string(),
            "cause #1 of node 2",
            "node {i}"
        );
    }
    h.finish().unwrap();
}

/// A `Done` made on a node that is already done holds only the error, not
/// the node: it keeps no ancestor alive. (Found by `tree_matches_model` at
/// 20,000 cases after the crate made that change; pinned here.)
#[test]
fn scenario_done_of_a_done_node_holds_nothing() {
    let h = steps(&[
        Op::WithCancel(1), // node 2
        Op::WithCancel(0), // node 3, under 2
        Op::WithCancel(0), // node 4, under 3
        Op::AfterFunc(1),  // registration 0, on 3
        Op::Cancel(0),     // 4 alone
        Op::Done(0),       // a Done of 4, made done
        Op::DropBoth(1),   // 3: kept by 4 only
        Op::DropBoth(0),   // 4: the Done does not keep it, so 3 goes too
        Op::Cancel(0),     // 2
    ]);
    assert_eq!(runs(&h, 0), 0);
    assert!(h.regs[0].discarded);
    assert!(h.dones[0].resolved);
    h.finish().unwrap();
}

/// A merged node is done when its second parent is, with that reason,
/// passes it to its children, and keeps it when its first parent is
/// cancelled later.
#[test]
fn scenario_merged_done_by_second_parent() {
    let h = steps(&[
        Op::WithCancel(1),      // node 2, under background
        Op::WithCancel(2),      // node 3, under background
        Op::Merge(1, 0),        // node 4: 2.merge(&3)
        Op::WithCancel(0),      // node 5, under 4
        Op::AfterFunc(0),       // registration 0, on 5
        Op::CancelWithCause(2), // held cancellers 2, 3, 4, 5 -> 3
        Op::CancelWithCause(3), // -> 2, too late for 4
    ]);
    for i in [4, 5] {
        assert_eq!(
            h.ctx(i).cause().unwrap().to_string(),
            "cause #1 of node 3",
            "node {i}"
        );
    }
    assert_eq!(runs(&h, 0), 1);
    assert!(h
        .ctx(4)
        .to_string()
        .ends_with(".WithCancel.Merge(context.Background.WithCancel)"));
    h.finish().unwrap();
}

/// A merged node holds its second parent: a node whose own handles are all
/// gone stays in the tree while a merged node has it as second parent, so
/// its callback still runs when its parent is cancelled.
#[test]
fn scenario_merge_keeps_second_parent_linked() {
    let h = steps(&[
        Op::WithCancel(1), // node 2
        Op::WithCancel(0), // node 3, under 2
        Op::AfterFunc(0),  // registration 0, on 3
        Op::Merge(3, 0),   // node 4: background.merge(&3)
        Op::DropBoth(1),   // 3: kept by 4 only
        Op::Cancel(1),     // held cancellers 2, 4 -> 2
    ]);
    assert_eq!(runs(&h, 0), 1);
    assert!(!h.regs[0].discarded);
    assert_eq!(h.ctx(4).err(), Some(Error::Canceled));
    h.finish().unwrap();
}

/// Merging two parents that are both done already: the child is born done
/// with its first parent's reason, as any child of a done parent is, even
/// though the second parent was done earlier.
#[test]
fn scenario_merge_of_two_done_parents_takes_the_first_parents_reason() {
    let h = steps(&[
        Op::WithCancel(1),      // node 2
        Op::WithCancel(2),      // node 3, under background
        Op::CancelWithCause(0), // 3: "cause #1 of node 3"
        Op::CancelWithCause(1), // 2: "cause #2 of node 2"
        Op::Merge(1, 0),        // node 4: 2.merge(&3), born done
    ]);
    assert_eq!(h.ctx(4).cause().unwrap().to_string(), "cause #2 of node 2");
    h.finish().unwrap();
}

/// A merged node's deadline is the earlier of its parents'; a deadline
/// below it at that same instant is no deadline of its own.
#[test]
fn scenario_merge_deadline_is_the_earlier() {
    let h = steps(&[
        Op::WithDeadline(1, At::Hour(2)), // node 2, under background
        Op::WithDeadline(2, At::Hour(1)), // node 3, under background
        Op::WithValue(0, 3),              // node 4, under 3
        Op::Merge(2, 0),                  // node 5: 2.merge(&4)
        Op::WithDeadline(0, At::Hour(1)), // node 6, under 5: equal
    ]);
    let d1 = h.base + HOUR + Duration::from_secs(1);
    assert_eq!(h.ctx(5).deadline(), Some(d1));
    assert_eq!(h.ctx(6).deadline(), Some(d1));
    assert_eq!(h.ctx(5).value::<u32>(), None, "values come from self only");
    assert!(h
        .ctx(6)
        .to_string()
        .ends_with(".WithValue(u32)).WithCancel"));
    h.finish().unwrap();
}
