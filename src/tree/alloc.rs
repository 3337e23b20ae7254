//! How a cancellable node is allocated, and freed.
//!
//! A plain node is a lone `Node`; its out-of-line part, if it ever needs
//! one (a callback, a merged node registering on it), is a box of its own.
//! A node born with an out-of-line part (a deadline, merged or grace node)
//! gets it in the same allocation, right after the node: one allocation
//! instead of two. The node's `rare` then borrows it (`OnceBox::borrowed`),
//! and [`free`] drops the two parts and frees the allocation together.
//!
//! Both are written in place, field by field, into fresh memory: building
//! a node and moving it into a box would copy it, and that copy (wide
//! loads of what was just stored narrow) costs as much as the rest of
//! deriving a child. Every access to the tail goes through pointers derived
//! from the allocation's own (with its provenance), never through a
//! reference to the node, which covers the node alone.

use std::mem::MaybeUninit;
use std::ptr::{self, addr_of_mut, NonNull};

use super::node_ref::NodeRef;
use super::once_box::OnceBox;
use super::{Extra, Node, Rare};

/// A node with its out-of-line part: the node first (`repr(C)`), so that a
/// pointer to it is a pointer to the node.
#[repr(C)]
struct Wide {
    node: Node,
    rare: Rare,
}

/// Fresh, uninitialised memory for a `T`, from the global allocator, as a
/// `Box<T>` would have it.
#[inline]
fn allocate<T>() -> NonNull<T> {
    let raw = Box::into_raw(Box::new(MaybeUninit::<T>::uninit())).cast::<T>();
    // SAFETY: `Box::into_raw` never returns null.
    unsafe { NonNull::new_unchecked(raw) }
}

/// Two handles to a plain node, which `make` builds from `rare`, its empty
/// out-of-line part.
#[inline]
pub(super) fn plain_pair(
    make: impl FnOnce(OnceBox<Rare>) -> Node,
    rare: OnceBox<Rare>,
) -> (NodeRef<Node>, NodeRef<Node>) {
    debug_assert!(rare.get().is_none() && !rare.is_borrowed());
    let node = allocate::<Node>();
    // SAFETY: fresh memory for a `Node`, written once before anyone sees it.
    unsafe { ptr::write(node.as_ptr(), make(rare)) };
    // SAFETY: a new node, not shared yet, with a fresh count (`make`'s), at
    // the start of a `Box<Node>`'s allocation, which `free` frees as one
    // (its `rare` is not borrowed); `node` has the allocation's provenance.
    unsafe { NodeRef::adopt_pair(node) }
}

/// Two handles to a node that `make` builds from its out-of-line part,
/// placed with `extra` right after it.
// Not inlined into the caller: a plain node's path stays short.
#[inline(never)]
pub(super) fn wide_pair(
    make: impl FnOnce(OnceBox<Rare>) -> Node,
    extra: Extra,
) -> (NodeRef<Node>, NodeRef<Node>) {
    let wide = allocate::<Wide>().as_ptr();
    // SAFETY: `wide` is fresh memory for a `Wide` that nobody else sees; the
    // field pointers are projections of its own pointer (no reference to
    // the whole is made), so they keep its provenance, and they are never
    // null.
    let (rare, node) = unsafe {
        (
            NonNull::new_unchecked(addr_of_mut!((*wide).rare)),
            NonNull::new_unchecked(addr_of_mut!((*wide).node)),
        )
    };
    // SAFETY: both parts are written once, into memory that holds nothing
    // yet, before the node is shared. The tail lives as long as the node
    // (the same allocation, dropped after the node in `free`), is only ever
    // read through the node's `rare` (shared references), and is dropped by
    // `free`: what `OnceBox::borrowed` asks.
    unsafe {
        ptr::write(rare.as_ptr(), Rare::with(Some(extra)));
        ptr::write(node.as_ptr(), make(OnceBox::borrowed(rare)));
    }
    // SAFETY: a new node, not shared yet, with a fresh count, at the start
    // of a `Wide` allocation, which `free` frees as one (its `rare` is
    // borrowed); `node` has the allocation's provenance.
    unsafe { NodeRef::adopt_pair(node) }
}

/// Drops the node at `this` (and its tail, if it has one) and frees the
/// allocation.
///
/// # Safety
///
/// `this` came from [`plain_pair`] or [`wide_pair`] (through its handles),
/// with the count at zero and the last release over, and nothing uses it
/// afterwards.
pub(super) unsafe fn free(this: NonNull<Node>) {
    // SAFETY: the node is live until dropped below; a shared reference,
    // gone before then. Only `wide_pair` makes a borrowed `rare`.
    let wide = unsafe { this.as_ref() }.rare.is_borrowed();
    if !wide {
        // SAFETY: the caller's promise: a `Box<Node>`'s allocation
        // (`plain_pair`), holding a live node nobody else uses.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
        return;
    }
    let wide = this.cast::<Wide>().as_ptr();
    // SAFETY: the caller's promise: a live `Wide` that nobody else uses. The
    // node is dropped first, then the tail, each through a projection of the
    // allocation's pointer (a `&mut` to each part alone, never to both).
    // What is left is plain memory, freed as the `Box` it came from (the
    // same layout: `MaybeUninit` has no drop of its own).
    unsafe {
        ptr::drop_in_place(addr_of_mut!((*wide).node));
        ptr::drop_in_place(addr_of_mut!((*wide).rare));
        drop(Box::from_raw(wide.cast::<MaybeUninit<Wide>>()));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::tree::Probe;
    use crate::Context;

    /// A merged node is one allocation, node and tail: the tail holds the
    /// second parent, which goes (once) when the node does, whichever of
    /// its handles is last and on whichever thread; a plain node beside it
    /// is freed as a lone node.
    #[test]
    fn a_node_and_its_tail_are_freed_together() {
        for last_on_thread in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (first, _c1) = Context::background().with_cancel();
            let (second, cancel_second) = Context::background()
                .with_value(Probe(drops.clone()))
                .with_cancel();
            let (merged, merged_cancel) = first.merge(&second);
            let plain = first.with_cancel();
            drop((second, cancel_second));
            assert_eq!(drops.load(Ordering::SeqCst), 0, "the tail holds it");
            assert!(merged.to_string().contains(".Merge("));
            drop(merged);
            if last_on_thread {
                std::thread::spawn(move || drop(merged_cancel))
                    .join()
                    .unwrap();
            } else {
                drop(merged_cancel);
            }
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            drop(plain);
        }
    }
}
