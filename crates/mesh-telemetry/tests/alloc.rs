//! The per-chunk byte counting path allocates nothing (a counting global allocator, per
//! thread so other tests' threads don't interfere).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::{model, outbound_to_echo};
use mesh_telemetry::{ConnGuard, Metrics, Registry, ResponseFlag};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn counting_bytes_and_reusing_series_do_not_allocate() {
    let model = model();
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let guard = ConnGuard::open(&metrics, outbound_to_echo(&model, &metrics));

    let before = allocations();
    for i in 0..10_000u64 {
        guard.add_to_server(i % 16_384);
        guard.add_to_client(1);
        if i == 5_000 {
            guard.add_flag(ResponseFlag::DownstreamConnectionTermination);
        }
    }
    let during = allocations() - before;
    assert_eq!(during, 0, "allocations on the byte path");
    assert_eq!(guard.bytes_to_client(), 10_000);

    drop(guard);

    // Steady state: once a label set's series exist, opening and closing a connection with the
    // same labels allocates nothing either (no logger installed here, so the access-log event
    // is not formatted).
    let info = outbound_to_echo(&model, &metrics);
    let warm = ConnGuard::open(&metrics, info.clone());
    warm.add_flag(ResponseFlag::UpstreamConnectionTermination);
    drop(warm);
    let before = allocations();
    for _ in 0..100 {
        let g = ConnGuard::open(&metrics, info.clone());
        g.add_to_server(1);
        g.add_flag(ResponseFlag::UpstreamConnectionTermination);
        drop(g);
    }
    assert_eq!(allocations() - before, 0, "allocations opening/closing known series");

    // Sanity: the counter does see allocations.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before, "allocator counts ({})", v.len());
}
