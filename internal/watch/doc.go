// Package watch delivers the changes of a node's partitions to the watchers on that node.
//
// Every partition keeps a bounded history of its changes in its state machine (store), so any
// replica can answer "what changed after position x". A Hub serves a node's watchers from
// those histories: from the node's own replica of a partition when it has one, else from a
// mirror that pulls the partition's changes from a replica elsewhere, switching replica when
// one fails and resuming where it stopped.
//
// One notifier per watched partition reads each change once and wakes only the watchers
// whose prefix it matches, so an idle watcher costs nothing: no polling, and no wake-up for
// changes it does not watch. A watcher reads its changes itself, from its own positions: one
// that falls behind what the history keeps gets store.ErrCompacted, never a silent skip and
// never an unbounded buffer.
package watch
