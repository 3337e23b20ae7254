//! The walk that cancels a subtree: iterative, so depth costs heap, not
//! stack; never waiting for another thread's walk (invariant 7).
//!
//! A cancel that wins its node's finish (invariant 1) visits it, then every
//! node reached from it: the children in its child list and the merged
//! nodes in its merged list, under its lock. Each node reached is finished
//! with the reason of the node it is reached from, or found done already:
//!
//! * finished here, with nothing attached and nobody listening: the CAS was
//!   all (no lock, no handle);
//! * finished here, with something attached: visited in turn (its
//!   callbacks taken, its timer stopped, its lists walked), and its waiters
//!   notified once the whole walk is over;
//! * done already, by another thread's cancel whose walk may still be under
//!   way below it, and with something attached: visited too, its lists
//!   walked with *its* reason, so that this walk does not return before the
//!   subtree is done, without waiting for that other walk. Its callbacks
//!   and waiters stay the other walk's business.
//!
//! A node is reached through at most two lists (a merged node through its
//! second parent's too), so the walk remembers the merged nodes it has
//! entered and enters each once; everything else is reached once because
//! its one way in is entered once. Nodes are found in lists under the
//! list owner's lock and turned into handles with `try_acquire` there
//! (invariant 4); a node whose count is already zero is being freed, has
//! no descendants (invariant 3) and no waiters, and is skipped.

use std::any::Any;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

use super::callbacks::Callback;
use super::list::Linked;
use super::merge;
use super::node_ref::NodeRef;
use super::state::Finish;
use super::Node;
use crate::error::{Cause, Error};
use crate::sync::lock;

/// A panic caught in a callback, to be resumed by the thread that cancelled.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// Why a node is on the walk's stack.
#[derive(Clone, Copy)]
enum Visit {
    /// This walk finished it, and must do what the winner does.
    Won(Finish),
    /// Another thread finished it; this walk covers what is below it.
    Help,
}

/// Which list a node was found in.
#[derive(Clone, Copy)]
enum Path {
    /// Its link parent's child list.
    Child,
    /// Its second parent's merged list.
    Merged,
}

/// The work list of one cancellation.
struct Walk {
    /// Nodes still to visit, each with the index in `reasons` of the reason
    /// its children take.
    stack: Vec<(NodeRef<Node>, Visit, usize)>,
    /// The walk's own reason first, then those of nodes it helps below.
    reasons: Vec<(Error, Option<Cause>)>,
    /// Merged nodes entered so far, held so that their addresses stay
    /// theirs until the walk ends.
    entered: Option<HashMap<NonNull<Node>, NodeRef<Node>>>,
    /// Finished nodes with waiters, notified after the walk.
    listened: Vec<NodeRef<Node>>,
    /// Callbacks taken from finished nodes, run after the walk.
    callbacks: Vec<Arc<dyn Callback>>,
}

/// Cancels `node` and its subtree with `err` and `cause`, unless it is
/// already done (then returns at once: invariant 1). When it returns,
/// every node below `node` is done (invariant 7), its waiters have been
/// woken and its callbacks run. Returns the first panic of a callback.
pub(crate) fn cancel(node: &NodeRef<Node>, err: Error, cause: Option<Cause>) -> Option<Panic> {
    let (err, cause) = merge::own_reason(node, err, cause);
    let first = node.state.finish(err, cause.clone())?;
    let mut walk = Walk {
        stack: Vec::new(),
        reasons: vec![(err, cause)],
        entered: None,
        listened: Vec::new(),
        callbacks: Vec::new(),
    };
    walk.visit(node, Visit::Won(first), 0);
    while let Some((next, visit, reason)) = walk.stack.pop() {
        walk.visit(&next, visit, reason);
        match visit {
            Visit::Won(finish) if finish.listened => walk.listened.push(next),
            // Dropping `next` may run its last release, which takes locks:
            // we hold none here.
            _ => drop(next),
        }
    }
    // The whole subtree is done: a node cancelled on its own now leaves its
    // parents' lists, as in Go, so that a long-lived parent does not keep a
    // list of dead children (invariant 2).
    node.leave_lists();
    // Wake the waiters once the whole subtree is done, so that a waiter
    // woken by this cancel finds it done.
    if first.listened {
        node.event.notify(usize::MAX);
    }
    for node in walk.listened.drain(..) {
        node.event.notify(usize::MAX);
    }
    drop(walk.entered);
    run_callbacks(walk.callbacks)
}

impl Walk {
    /// Visits `node`, reached as `visit`, whose children take the reason at
    /// index `reason` (for a node this walk finished; a helped node's
    /// children take its own).
    fn visit(&mut self, node: &Node, visit: Visit, reason: usize) {
        let won = match visit {
            // Nothing attached (invariant 5): no lock.
            Visit::Won(finish) if !finish.dependents => return,
            Visit::Won(_) => true,
            Visit::Help => false,
        };
        let reason = if won {
            reason
        } else {
            match node.state.reason() {
                Some(own) => {
                    self.reasons.push(own);
                    self.reasons.len() - 1
                }
                None => unreachable!("a node is helped only once done"),
            }
        };
        let callbacks = {
            let mut children = node.state.lock();
            children.with(|list| {
                for child in list.iter() {
                    self.reach(child, reason, Path::Child);
                }
            });
            match node.attached_if_any() {
                Some(attached) => {
                    let mut attached = lock(attached);
                    for merged in attached.merged.iter() {
                        self.reach(merged, reason, Path::Merged);
                    }
                    if won {
                        std::mem::take(&mut *attached.callbacks)
                    } else {
                        Vec::new()
                    }
                }
                None => Vec::new(),
            }
        };
        if won {
            if !callbacks.is_empty() {
                // Taken out of the node's list: they must not point back at
                // it once we let go of it (it may be freed before they run).
                for callback in &callbacks {
                    callback.detach();
                }
                self.callbacks.extend(callbacks);
            }
            node.disarm_timers();
        }
    }

    /// Finishes `linked`, found in `path` under its owner's lock, which the
    /// caller holds, with the reason at index `reason`, and queues it for a
    /// visit if it needs one. The node is live while that lock is held,
    /// whatever its count (invariant 4).
    fn reach(&mut self, linked: Linked<'_, Node>, reason: usize, path: Path) {
        let node = linked.get();
        let ptr = linked.ptr();
        let (err, cause) = &self.reasons[reason];
        let finished = match path {
            Path::Child => merge::finish_as_child(node, *err, cause),
            // This walk's node is the second parent: its reason wins.
            Path::Merged => node.state.finish(*err, cause.clone()),
        };
        let visit = match finished {
            Some(finish) if finish.is_leaf() => return,
            Some(finish) => Visit::Won(finish),
            // Done by another thread, with something attached: cover it.
            None if node.state.has_dependents() => Visit::Help,
            None => return,
        };
        let merged = node.merge_link().is_some();
        if merged && matches!(visit, Visit::Help) {
            if let Some(entered) = &self.entered {
                if entered.contains_key(&ptr) {
                    return;
                }
            }
        }
        // SAFETY: as above, the caller holds the lock of the list the node
        // is in, which its last release takes before it is freed.
        let Some(handle) = (unsafe { NodeRef::try_acquire(ptr) }) else {
            // Its last release is under way: no descendants, no waiters.
            return;
        };
        if merged {
            // A clone, not a drop: no handle may be dropped under a lock.
            self.entered
                .get_or_insert_with(HashMap::new)
                .entry(ptr)
                .or_insert_with(|| handle.clone());
        }
        self.stack.push((handle, visit, reason));
    }
}

fn run_callbacks(callbacks: Vec<Arc<dyn Callback>>) -> Option<Panic> {
    let mut first = None;
    for callback in callbacks {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.run()));
        if let Err(panic) = result {
            first.get_or_insert(panic);
        }
    }
    first
}
