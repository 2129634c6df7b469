//! Importance criteria: one file each, all scoring the channels of every pruning group (higher =
//! more important). Weight-based criteria read the IR weights; data-driven ones run the engine
//! over local data.
