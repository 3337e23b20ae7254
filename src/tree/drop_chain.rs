//! Dropping a chain of contexts without recursion.
//!
//! Each node owns its parent, so dropping the last handle of a leaf can drop
//! its parent, which drops its parent, and so on: a million-deep chain would
//! overflow the stack. Instead, a node hands its parent to [`release`], which
//! drops it at once unless a release is already running further up this
//! thread's stack; then it queues it for that outer loop. The stack depth of
//! any drop is therefore constant.

use std::cell::{Cell, RefCell};

use super::tagged::Owned;
use super::{NodeRef, Repr};
use crate::context::Context;

#[cfg(not(loom))]
std::thread_local! {
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    static QUEUE: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
}

#[cfg(loom)]
loom::thread_local! {
    static DRAINING: Cell<bool> = Cell::new(false);
    static QUEUE: RefCell<Vec<Context>> = RefCell::new(Vec::new());
}

/// Drops `parent`, the context a node let go of in its own `Drop`. The
/// common cases cannot recurse and take a short way: a root owns nothing,
/// and a cancellable parent that others still hold is let go of by one
/// decrement.
#[inline]
pub(crate) fn release_one(parent: Context) {
    match parent.repr.into_owned() {
        Owned::Empty(_) => {}
        Owned::A(node) => {
            if let Err(node) = NodeRef::release_unless_last(node) {
                release([Some(Context {
                    repr: Repr::cancel(node),
                })]);
            }
        }
        Owned::B(node) => release([Some(Context {
            repr: Repr::value(node),
        })]),
    }
}

/// Drops `parents`, all but a root's, without recursion: at once unless a
/// release is already running further up this thread's stack.
fn release<const N: usize>(parents: [Option<Context>; N]) {
    // The roots own nothing: dropping one never recurses.
    let owns = |p: &Option<Context>| p.as_ref().is_some_and(|p| !p.repr.is_root());
    if !parents.iter().any(owns) {
        return;
    }
    let Ok(was_draining) = DRAINING.try_with(|d| d.replace(true)) else {
        // This thread's locals are gone (a context dropped by another
        // thread-local's destructor): drop directly.
        drop(parents);
        return;
    };
    if was_draining {
        // If the queue is gone, the closure is dropped unrun and drops
        // the parents directly.
        let _ = QUEUE.try_with(move |q| q.borrow_mut().extend(parents.into_iter().flatten()));
        return;
    }
    // Clears the flag even if a value's `Drop` panics below.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = DRAINING.try_with(|d| d.set(false));
        }
    }
    let _reset = Reset;
    drop(parents);
    while let Some(next) = QUEUE.try_with(|q| q.borrow_mut().pop()).ok().flatten() {
        drop(next);
    }
}
