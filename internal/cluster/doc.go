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
// (Formed, Balanced, LedBy) are such conditions.
package cluster
