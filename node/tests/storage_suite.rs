//! openraft's own storage conformance suite (`openraft::testing`) against
//! the node's log store and state machine, on real sled and on the
//! simulator's in-memory engine.

use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use shadowstore_node::raft::Runtime;
use shadowstore_node::raft::TypeConfig;
use shadowstore_node::raft::log_store::LogStore;
use shadowstore_node::raft::state_machine::StateMachineStore;
use shadowstore_node::storage::SharedEngine;
use shadowstore_node::storage::Syncer;
use shadowstore_node::storage::memory_engine::MemoryEngine;
use shadowstore_node::storage::sled_engine::SledEngine;

/// Resource group id used by the suite (not the meta group: its state
/// machine kind differs, the log store does not).
const GROUP: shadowstore_base::ids::GroupId = shadowstore_base::ids::GroupId::new(7);

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine: SharedEngine = SledEngine::open(dir.path(), 8 << 20).expect("open sled");
        let syncer = Syncer::start(engine.clone());
        let log = LogStore::new(GROUP, engine.clone(), syncer.clone());
        let sm = StateMachineStore::open(GROUP, engine, syncer).expect("open sm");
        Ok((dir, log, sm))
    }
}

struct MemoryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let engine: SharedEngine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        let log = LogStore::new(GROUP, engine.clone(), syncer.clone());
        let sm = StateMachineStore::open(GROUP, engine, syncer).expect("open sm");
        Ok(((), log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_sled() {
    Runtime::scope(1, Suite::test_all(SledBuilder)).await.expect("suite failed on sled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_memory_engine() {
    Runtime::scope(2, Suite::test_all(MemoryBuilder)).await.expect("suite failed on memory engine");
}
