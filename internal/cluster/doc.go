// Package cluster runs GridKV clusters inside one test process: every node listens on its own
// loopback port, and every node's transport consults one fault network the test can cut, slow
// and heal. It is a test harness only; no production package imports it.
//
// # Usage
//
// Every test that needs nodes starts them with Start, which returns when they are as ready as
// Options.Wait asks:
//
//	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitFormed})
//	kv := c.Node(0).KV
//
// Options cover every way the tests start nodes: FaultTimings for fault scenarios, the library's
// own partition count for single-node tests, a cluster key, TLS or a recorded log per node, and
// Mutate for anything else. A test polls a condition with WaitFor, and the Cluster's predicates
// (Formed, Balanced, LedBy, ReplicasAgree, IdentitiesLive) are such conditions.
//
// # Invariants checked at the end of every test
//
// Start registers, with t.Cleanup, the checks every test must pass, as bbolt's btesting does.
// They run after the cleanups the test registered after Start, and only if the test has not
// failed by then, in this order:
//
//  1. every history made with NewHistory is linearizable (porcupine);
//  2. for a cluster that ever had more than one node: the network is healed, a write to every
//     partition succeeds within 30 s, and every replica of every partition then agrees
//     (ReplicasAgree) within 60 s;
//  3. every node is closed (always, failed test or not);
//  4. no goroutine started since the test's first Start outlives its nodes (goleak), checked
//     once per test, after every cluster it started closed; TestMain's goleak check still
//     covers the whole binary, goroutines of tests without a cluster included.
//
// A test that must not pass a check says so, with the reason, in Options.SkipReplicaCheck or
// Options.SkipLeakCheck. A test's own goroutines must have ended by the time the checks run:
// end them in the test body or in a t.Cleanup registered after Start.
//
// ReplicasAgree and IdentitiesLive need to look inside nodes beyond the public API, which only
// the root package's tests can (through its export_test.go); they set Inspect in TestMain.
package cluster
