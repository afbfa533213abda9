//! The shared tier of the caching client: how a run of blocks missing on the local disk is
//! produced when there is a shared cache (`--cache-xz`).
//!
//! Order per block: the bucket's copy if valid; else the lease decides who fetches it from the
//! source (see `shared/mod.rs`). Blocks found in the bucket are written to the local disk; blocks
//! fetched are written to both. Consecutive blocks this node fetches go in one ranged GET, as
//! without the shared tier.
//!
//! Until the object size is known (the first block of a request), one block is handled alone:
//! the bucket's copy or its GET tells the size, so the rest of the run never looks up, leases or
//! fetches blocks past the end of the object. Once it is known, lookups run
//! [`LOOKUPS_IN_FLIGHT`] at a time, in order.

use std::sync::Arc;

use futures::StreamExt;

use super::client::{Core, fetch, unwanted};
use super::flight::{Flight, FlightError, Source};
use super::format::{ObjectId, block_extent};
use super::shared::SharedCache;
use super::shared::format::CheckedBlock;
use super::shared::lease::Lease;
use crate::client::ObjectClient;

/// Lookups (and lease requests) of one run in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

type Run = [(u64, Arc<Flight>)];

/// Produces `run` (consecutive blocks absent on disk); returns the object size if learnt.
pub(super) async fn produce_run<C: ObjectClient>(
    core: &Arc<Core<C>>,
    shared: &Arc<SharedCache>,
    id: &Arc<ObjectId>,
    run: &Run,
    mut known_size: Option<u64>,
) -> Option<u64> {
    if shared.resting() {
        return fetch(core, id, run, known_size, false).await;
    }
    let mut from = 0;
    if known_size.is_none() {
        known_size = produce_some(core, shared, id, &run[..1], None).await;
        from = 1;
        if known_size.is_none() {
            // The first block failed: the rest cannot be placed in the object either.
            if from < run.len() {
                produce_unknown(core, id, &run[from..]).await;
            }
            return None;
        }
    }
    if from < run.len() {
        produce_some(core, shared, id, &run[from..], known_size).await;
    }
    known_size
}

/// Blocks after a first one that failed: fetched from the source as before (its error, if any,
/// is theirs too).
async fn produce_unknown<C: ObjectClient>(core: &Arc<Core<C>>, id: &Arc<ObjectId>, run: &Run) {
    if unwanted(run) {
        return core.fail(run, FlightError::Cancelled);
    }
    fetch(core, id, run, None, false).await;
}

/// Produces `run`: lookups, then the misses in runs.
async fn produce_some<C: ObjectClient>(
    core: &Arc<Core<C>>,
    shared: &Arc<SharedCache>,
    id: &Arc<ObjectId>,
    run: &Run,
    mut known_size: Option<u64>,
) -> Option<u64> {
    let bs = shared.block_size();
    // Blocks past the end of a known object have nothing to deliver.
    let mut end = run.len();
    if let Some(size) = known_size {
        end = run.iter().take_while(|(index, _)| block_extent(*index, bs, size).is_some()).count();
        for (_, f) in &run[end..] {
            f.set_object_size(size);
            f.finish(Ok(()));
            core.inflight.release(f);
        }
    }
    let run = &run[..end];
    let size_then = known_size;
    let indexes: Vec<u64> = run.iter().map(|(index, _)| *index).collect();
    let lookups = indexes.into_iter().map(|index| {
        let (shared, id) = (shared.clone(), id.clone());
        async move { shared.get(&id, index, size_then).await }
    });
    let mut lookups = futures::stream::iter(lookups).buffered(LOOKUPS_IN_FLIGHT);
    let mut misses_from = None;
    let mut k = 0;
    while let Some(found) = lookups.next().await {
        match found.filter(|b| known_size.is_none_or(|s| s == b.object_size)) {
            Some(block) => {
                if let Some(m) = misses_from.take() {
                    fetch_misses(core, shared, id, &run[m..k], known_size).await;
                }
                known_size = Some(block.object_size);
                serve(core, id, &run[k], block);
            }
            None => {
                misses_from.get_or_insert(k);
            }
        }
        k += 1;
    }
    if let Some(m) = misses_from {
        known_size = fetch_misses(core, shared, id, &run[m..], known_size).await.or(known_size);
    }
    known_size
}

/// Hands a block found in the bucket to its flight and writes it to the local disk.
fn serve<C: ObjectClient>(
    core: &Arc<Core<C>>,
    id: &Arc<ObjectId>,
    (index, flight): &(u64, Arc<Flight>),
    block: CheckedBlock,
) {
    flight.start(Source::Shared, 0);
    flight.set_object_size(block.object_size);
    flight.push(block.data);
    let (c, done) = (core.clone(), flight.clone());
    core.cache.queue_write(id, *index, block.object_size, flight.chunks(), move || c.inflight.release(&done));
    flight.finish(Ok(()));
}

/// Consecutive blocks absent from the bucket: leases, then fetches and waits in order.
async fn fetch_misses<C: ObjectClient>(
    core: &Arc<Core<C>>,
    shared: &Arc<SharedCache>,
    id: &Arc<ObjectId>,
    run: &Run,
    mut known_size: Option<u64>,
) -> Option<u64> {
    if unwanted(run) {
        core.fail(run, FlightError::Cancelled);
        return known_size;
    }
    let indexes: Vec<u64> = run.iter().map(|(index, _)| *index).collect();
    let leases = indexes.into_iter().map(|index| {
        let (shared, id) = (shared.clone(), id.clone());
        async move { shared.take_lease(&id, index).await }
    });
    let leases: Vec<Lease> = futures::stream::iter(leases).buffered(LOOKUPS_IN_FLIGHT).collect().await;
    let mut k = 0;
    while k < run.len() {
        if unwanted(&run[k..]) {
            core.fail(&run[k..], FlightError::Cancelled);
            release_unfetched(shared, id, &run[k..], &leases[k..]);
            return known_size;
        }
        match leases[k] {
            Lease::Theirs(until) => {
                let (index, _) = &run[k];
                match shared.wait_for(id, *index, known_size, until).await {
                    Some(block) if known_size.is_none_or(|s| s == block.object_size) => {
                        known_size = Some(block.object_size);
                        serve(core, id, &run[k], block);
                    }
                    _ => known_size = fetch(core, id, &run[k..k + 1], known_size, false).await.or(known_size),
                }
                k += 1;
            }
            kind => {
                // The following blocks with the same kind of lease, in one GET.
                let n = leases[k..].iter().take_while(|l| **l == kind).count();
                let leased = kind == Lease::Ours;
                known_size = fetch(core, id, &run[k..k + n], known_size, leased).await.or(known_size);
                if leased {
                    release_unfetched(shared, id, &run[k..k + n], &leases[k..k + n]);
                }
                k += n;
            }
        }
    }
    known_size
}

/// Gives up this node's leases on blocks it did not fetch after all (the readers went away, or
/// the GET failed), so other nodes stop waiting for them.
fn release_unfetched(shared: &Arc<SharedCache>, id: &Arc<ObjectId>, run: &Run, leases: &[Lease]) {
    for ((index, flight), lease) in run.iter().zip(leases) {
        if *lease == Lease::Ours && !flight.succeeded() {
            let (shared, id, index) = (shared.clone(), id.clone(), *index);
            tokio::spawn(async move { shared.release_lease(&id, index).await });
        }
    }
}
