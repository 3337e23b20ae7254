//! A node born with an out-of-line part (a deadline, merged or grace node)
//! gets it in the same allocation, right after the node: one allocation
//! instead of two. The node's `rare` borrows it (`OnceBox::borrowed`), and
//! [`free`] drops the two parts and frees the allocation together. A plain
//! node stays a lone `Node`, whose out-of-line part, if it ever needs one,
//! is a box of its own.
//!
//! Every access to the tail goes through pointers derived from the
//! allocation's own (with its provenance), never through a reference to the
//! node, which covers the node alone.

use std::mem::MaybeUninit;
use std::ptr::{self, addr_of_mut, NonNull};

use super::node_ref::NodeRef;
use super::once_box::OnceBox;
use super::{Extra, Node, Rare};

/// The allocation: the node first (`repr(C)`), so that a pointer to it is a
/// pointer to the node.
#[repr(C)]
struct Wide {
    node: Node,
    rare: Rare,
}

/// Two handles to `node`, placed with `extra`'s out-of-line part after it.
/// `node` comes with an empty `rare`.
pub(super) fn new_pair(node: Node, extra: Extra) -> (NodeRef<Node>, NodeRef<Node>) {
    debug_assert!(node.rare.get().is_none());
    let wide = Box::into_raw(Box::new(Wide {
        node,
        rare: Rare::with(Some(extra)),
    }));
    // SAFETY: `wide` is a fresh allocation that nobody else sees; the field
    // pointers are projections of its own pointer (no reference to the
    // whole is made), so they keep its provenance, and they are never null.
    let (rare, node) = unsafe {
        (
            NonNull::new_unchecked(addr_of_mut!((*wide).rare)),
            NonNull::new_unchecked(addr_of_mut!((*wide).node)),
        )
    };
    // SAFETY: the tail lives as long as the node (the same allocation,
    // dropped after the node in `free`), is only ever read through the
    // node's `rare` (shared references), and is dropped by `free`.
    // The empty `OnceBox` it replaces owns nothing, so not dropping it
    // leaks nothing.
    unsafe { ptr::write(addr_of_mut!((*node.as_ptr()).rare), OnceBox::borrowed(rare)) };
    // SAFETY: a new node, not shared yet, with a fresh count, at the start
    // of a `Wide` allocation, which `Node`'s `Counted::free` sends to `free`
    // (its `rare` is borrowed); `node` has the allocation's provenance.
    unsafe { NodeRef::adopt_pair(node) }
}

/// Drops the node at `this` and its tail, and frees their allocation.
///
/// # Safety
///
/// `this` came from [`new_pair`] (through its handles), with the count at
/// zero and the last release over, and nothing uses it afterwards.
pub(super) unsafe fn free(this: NonNull<Node>) {
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
