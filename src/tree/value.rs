//! Value nodes (`with_value`, and `without_cancel`'s detached node): one
//! allocation, a header the tree reads followed by the value, of any type,
//! behind a thin pointer, so that a `Context` is one word (`tagged.rs`).
//!
//! The header keeps two functions made for the value's type: one to see the
//! value as `dyn Any` from the node's pointer, one to free the allocation.
//! Both take the pointer the handle holds, which has the provenance of the
//! whole allocation, never one derived from a reference to the header.

use std::any::Any;
use std::ptr::{self, NonNull};

use super::drop_chain::release_one;
use super::node_ref::{Counted, NodeRef, RefCount};
use super::tagged::Borrowed;
use super::Node;
use crate::context::Context;

/// What a value is seen as.
type AnyValue = dyn Any + Send + Sync;

/// The header of a value node.
#[repr(C)]
pub(crate) struct ValueNode {
    count: RefCount,
    pub(super) parent: Context,
    /// The nearest cancellable node above, for `err`, `done` and the rest.
    pub(super) anchor: Option<NodeRef<Node>>,
    pub(crate) type_name: &'static str,
    /// The value, from the node's pointer.
    value: unsafe fn(NonNull<ValueNode>) -> *const AnyValue,
    /// Frees the whole allocation, from the node's pointer.
    free: unsafe fn(NonNull<ValueNode>),
}

/// The allocation: the header first (`repr(C)`), so that a pointer to it is
/// a pointer to the header.
#[repr(C)]
struct Typed<V> {
    head: ValueNode,
    value: V,
}

/// # Safety
///
/// `head` is the pointer of a live `Typed<V>`'s header, with the provenance
/// of the whole allocation.
unsafe fn value_of<V: Any + Send + Sync>(head: NonNull<ValueNode>) -> *const AnyValue {
    let typed = head.cast::<Typed<V>>().as_ptr();
    // SAFETY: the caller's promise; `addr_of!` makes no reference.
    let value: *const V = unsafe { ptr::addr_of!((*typed).value) };
    value as *const AnyValue
}

/// # Safety
///
/// `head` came from `Box::into_raw` of a `Box<Typed<V>>` (in `new`), and
/// nothing uses it afterwards.
unsafe fn free_typed<V>(head: NonNull<ValueNode>) {
    // SAFETY: the caller's promise.
    drop(unsafe { Box::from_raw(head.cast::<Typed<V>>().as_ptr()) });
}

impl ValueNode {
    /// A new value node below `parent`, holding `value`.
    pub(super) fn new<V: Any + Send + Sync>(
        parent: &Context,
        anchor: Option<NodeRef<Node>>,
        value: V,
    ) -> NodeRef<ValueNode> {
        let typed = Box::into_raw(Box::new(Typed {
            head: ValueNode {
                count: RefCount::new(),
                parent: parent.clone(),
                anchor,
                type_name: std::any::type_name::<V>(),
                value: value_of::<V>,
                free: free_typed::<V>,
            },
            value,
        }));
        // SAFETY: `Box::into_raw` never returns null.
        let head = unsafe { NonNull::new_unchecked(typed) }.cast::<ValueNode>();
        // SAFETY: a new header with a fresh count, at the start of a
        // `Typed<V>` allocation (so the same address, with its provenance),
        // which `Counted::free` below frees through `free_typed::<V>`.
        unsafe { NodeRef::from_raw(head) }
    }

    /// The value of the node `this`, for as long as it is borrowed.
    pub(crate) fn value(this: Borrowed<'_, ValueNode>) -> &AnyValue {
        // SAFETY: `this` is the pointer a live handle holds, with the
        // provenance of the whole `Typed<V>`, and `value` was made for that
        // `V`; the value lives as long as the borrow, and is only ever
        // shared.
        unsafe { &*(this.get().value)(this.as_ptr()) }
    }
}

// SAFETY: a value node is in no list and has no back-reference: only its
// handles reach it. `free` frees the `Typed<V>` it heads.
unsafe impl Counted for ValueNode {
    #[inline]
    fn ref_count(&self) -> &RefCount {
        &self.count
    }

    fn last_release(&self) {}

    /// In no list and with no back-reference: only handles reach a value
    /// node, and the caller's is the only one.
    #[inline]
    fn last_release_if_unique(&self) -> bool {
        true
    }

    unsafe fn free(this: NonNull<ValueNode>) {
        // SAFETY: the header is live until freed just below.
        let free = unsafe { this.as_ref() }.free;
        // SAFETY: `this` came from `new` (through the handles), its count is
        // zero and nobody uses it afterwards: the contract of `Counted::free`.
        unsafe { free(this) };
    }
}

impl Drop for ValueNode {
    fn drop(&mut self) {
        // Not the last reference to the anchor: `parent` still holds it.
        self.anchor = None;
        release_one(std::mem::take(&mut self.parent));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::tree::Probe;
    use crate::Context;

    #[repr(align(64))]
    #[derive(Debug, PartialEq)]
    struct Wide([u64; 8]);

    #[derive(Debug, PartialEq)]
    struct Unit;

    /// Values of every shape (no size, one byte, an alignment above the
    /// header's, a heap-owning one) are found through the header's
    /// function and dropped once, with the node.
    #[test]
    fn values_of_every_layout_are_found_and_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let root = Context::background();
        let ctx = root
            .with_value(Unit)
            .with_value(7u8)
            .with_value(Wide([1, 2, 3, 4, 5, 6, 7, 8]))
            .with_value(String::from("hello"))
            .with_value(Probe(drops.clone()));
        assert_eq!(ctx.value::<Unit>(), Some(&Unit));
        assert_eq!(ctx.value::<u8>(), Some(&7));
        let wide = ctx.value::<Wide>().unwrap();
        assert_eq!(wide, &Wide([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(wide as *const Wide as usize % 64, 0);
        assert_eq!(ctx.value::<String>().map(String::as_str), Some("hello"));
        assert!(ctx.value::<u64>().is_none());
        let clone = ctx.clone();
        drop(ctx);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(clone.value::<Probe>().is_some());
        drop(clone);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// The last handle of a value node may go on any thread; the value goes
    /// with it, once.
    #[test]
    fn last_handles_on_other_threads_drop_the_value_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let ctx = parent.with_value(Probe(drops.clone()));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let mine = ctx.clone();
                std::thread::spawn(move || {
                    assert!(mine.value::<Probe>().is_some());
                    drop(mine);
                })
            })
            .collect();
        drop(ctx);
        cancel.cancel();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(parent.is_done());
    }

    /// `without_cancel`'s node is a value node with a value nobody can ask
    /// for: it shows as itself, and lets the values above through.
    #[test]
    fn a_detached_node_shows_as_itself_and_lets_values_through() {
        let (parent, cancel) = Context::background().with_value(3u32).with_cancel();
        let detached = parent.without_cancel();
        cancel.cancel();
        assert!(!detached.is_done());
        assert_eq!(detached.value::<u32>(), Some(&3));
        assert!(detached.to_string().ends_with(".WithoutCancel"));
    }
}
