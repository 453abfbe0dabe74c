package protocol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
)

// gatedNode is a testNode with its handler of single forwarded operations held shut until the
// test opens it, and its batch handler counting what it is sent.
type gatedNode struct {
	*testNode
	gate chan struct{}

	mu      sync.Mutex // guards batches and keys
	batches []int      // operations per batch call, in arrival order
	keys    []string
}

func startGatedNode(t *testing.T) *gatedNode {
	t.Helper()
	n := &gatedNode{testNode: startTestNode(t), gate: make(chan struct{})}
	n.trans.Handle(kindOp, func(ctx context.Context, from string, b []byte) ([]byte, error) {
		select {
		case <-n.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return n.server.serveOp(ctx, from, b)
	})
	n.trans.Handle(kindOpBatch, func(ctx context.Context, from string, b []byte) ([]byte, error) {
		var reqs []OpRequest
		if err := Unmarshal(b, &reqs); err == nil {
			n.mu.Lock()
			n.batches = append(n.batches, len(reqs))
			for _, r := range reqs {
				n.keys = append(n.keys, r.Key)
			}
			n.mu.Unlock()
		}
		return n.server.serveOpBatch(ctx, from, b)
	})
	return n
}

// set forwards a Set of key to the node itself.
func (n *gatedNode) set(ctx context.Context, key string) error {
	p := ring.PartitionOf(key, testPartitions)
	_, err := n.client.Forward(ctx, n.trans.Addr(), &OpRequest{Partition: p, Op: OpSet, Key: key, Value: []byte("v-" + key)})
	return err
}

// fillWire puts forwardBatches single operations on the wire, one at a time so that each
// leaves alone, held at the gate; each one's error goes to errs.
func (n *gatedNode) fillWire(t *testing.T, ctx context.Context, errs chan<- error) {
	t.Helper()
	for i := range forwardBatches {
		go func() { errs <- n.set(ctx, fmt.Sprint("first-", i)) }()
		n.waitQueue(t, i+1, 0)
	}
}

// waitQueue waits until the node's forwarder to itself has sending batches on the wire and
// queued operations waiting.
func (n *gatedNode) waitQueue(t *testing.T, sending, queued int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f := n.client.forwarder(n.trans.Addr())
		f.mu.Lock()
		s, q := f.sending, len(f.queue)
		f.mu.Unlock()
		if s == sending && q == queued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("forwarder has %d batches on the wire and %d queued; want %d and %d", s, q, sending, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// queueSets starts count Sets of the keys queued-0.. behind the calls fillWire holds, and
// waits until they are all queued; each one's error goes to errs.
func (n *gatedNode) queueSets(t *testing.T, ctx context.Context, errs chan<- error, count int) {
	t.Helper()
	for i := range count {
		go func() { errs <- n.set(ctx, fmt.Sprint("queued-", i)) }()
	}
	n.waitQueue(t, forwardBatches, count)
}

// release opens the gate and requires the next count errors to be nil.
func (n *gatedNode) release(t *testing.T, errs <-chan error, count int) {
	t.Helper()
	close(n.gate)
	for range count {
		if err := <-errs; err != nil {
			t.Errorf("forwarded Set: %v", err)
		}
	}
}

// checkSets requires the keys queued-0..count-1 to hold what queueSets wrote.
func (n *gatedNode) checkSets(t *testing.T, count int) {
	t.Helper()
	for i := range count {
		key := fmt.Sprint("queued-", i)
		if v, ok := n.backend.get(key); !ok || string(v) != "v-"+key {
			t.Errorf("%s = %q, %v; want the forwarded value", key, v, ok)
		}
	}
}

// While forwardBatches calls are on the wire, further operations wait, and all of them leave
// in the next call.
func TestForwardBatchesWhileCallsAreOnTheWire(t *testing.T) {
	n := startGatedNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const queued = 10
	errs := make(chan error, forwardBatches+queued)
	n.fillWire(t, ctx, errs)
	n.queueSets(t, ctx, errs, queued)
	n.release(t, errs, forwardBatches+queued)

	n.mu.Lock()
	if len(n.batches) != 1 || n.batches[0] != queued {
		t.Errorf("batch calls carried %v operations; want one call with all %d queued", n.batches, queued)
	}
	n.mu.Unlock()
	n.checkSets(t, queued)
}

// An operation whose caller gives up while it waits in the queue is never sent, and its
// caller is told so rather than that the outcome is unknown.
func TestForwardAbandonedWhileQueuedIsNotSent(t *testing.T) {
	n := startGatedNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	errs := make(chan error, forwardBatches+1)
	n.fillWire(t, ctx, errs)
	abandonCtx, abandon := context.WithCancel(ctx)
	abandoned := make(chan error, 1)
	go func() { abandoned <- n.set(abandonCtx, "abandoned") }()
	go func() { errs <- n.set(ctx, "kept") }()
	n.waitQueue(t, forwardBatches, 2)
	abandon()
	err := <-abandoned
	if !errors.Is(err, context.Canceled) || errors.Is(err, raftgroup.ErrOutcomeUnknown) {
		t.Errorf("abandoned Set: %v; want context.Canceled without ErrOutcomeUnknown", err)
	}
	n.release(t, errs, forwardBatches+1)

	if _, ok := n.backend.get("abandoned"); ok {
		t.Error("the abandoned Set took effect")
	}
	if v, ok := n.backend.get("kept"); !ok || string(v) != "v-kept" {
		t.Errorf("kept = %q, %v", v, ok)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if strings.Contains(strings.Join(n.keys, " "), "abandoned") {
		t.Errorf("the abandoned operation was sent: batches carried %v", n.keys)
	}
}

// A peer without the batch handler (an older version, during a rolling upgrade) refuses the
// batch unrun; its operations then go one by one and all succeed.
func TestForwardFallsBackForAPeerWithoutBatches(t *testing.T) {
	n := startGatedNode(t)
	n.trans.Handle(kindOpBatch, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const queued = 3
	errs := make(chan error, forwardBatches+queued)
	n.fillWire(t, ctx, errs)
	n.queueSets(t, ctx, errs, queued)
	n.release(t, errs, forwardBatches+queued)
	n.checkSets(t, queued)
}

// Close answers every operation still queued and waits for the batches on the wire.
func TestForwardCloseAnswersQueuedOperations(t *testing.T) {
	n := startGatedNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	errs := make(chan error, forwardBatches+3)
	n.fillWire(t, ctx, errs)
	n.queueSets(t, ctx, errs, 3)
	n.client.Close()
	closed, unknown := 0, 0
	for range forwardBatches + 3 {
		switch err := <-errs; {
		case errors.Is(err, ErrClosed):
			closed++
		case errors.Is(err, raftgroup.ErrOutcomeUnknown):
			unknown++ // on the wire when Close began
		default:
			t.Errorf("forwarded Set during Close: %v; want ErrClosed or ErrOutcomeUnknown", err)
		}
	}
	if closed != 3 || unknown != forwardBatches {
		t.Errorf("%d ErrClosed and %d ErrOutcomeUnknown; want 3 (queued) and %d (on the wire)", closed, unknown, forwardBatches)
	}
	if _, err := n.client.Forward(ctx, "127.0.0.1:1", &OpRequest{Op: OpGet, Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Errorf("forward after Close: %v; want ErrClosed", err)
	}
}

// A batch is answered in order, each operation with its own outcome; a batch larger than a
// sender may make is refused whole.
func TestServeOpBatch(t *testing.T) {
	n := startTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.backend.write(store.Command{Op: store.OpSet, Key: keyIn("present", 1), Value: []byte("here")}); err != nil {
		t.Fatal(err)
	}
	reqs := []OpRequest{
		{Partition: 0, Op: OpSet, Key: keyIn("new", 0), Value: []byte("x"), TimeoutMS: 20000},
		{Partition: 1, Op: OpGet, Key: keyIn("present", 1), TimeoutMS: 20000},
		{Partition: 2, Op: OpGet, Key: keyIn("missing", 2), TimeoutMS: 20000},
		{Partition: 3, Op: OpSet, Key: keyIn("elsewhere", 0), Value: []byte("x"), TimeoutMS: 20000},
	}
	out, err := n.server.serveOpBatch(ctx, "test", mustMarshal(t, reqs))
	if err != nil {
		t.Fatal(err)
	}
	var resps []opResponse
	if err := Unmarshal(out, &resps); err != nil {
		t.Fatal(err)
	}
	want := []uint8{codeOK, codeOK, codeKeyNotFound, codeInvalid}
	if len(resps) != len(want) {
		t.Fatalf("%d answers to %d operations", len(resps), len(want))
	}
	for i, r := range resps {
		if r.Code != want[i] {
			t.Errorf("operation %d answered code %d (%s); want %d", i, r.Code, r.Msg, want[i])
		}
	}
	if string(resps[1].Value) != "here" {
		t.Errorf("the Get in the batch read %q; want here", resps[1].Value)
	}

	tooMany := make([]OpRequest, forwardBatchOps+1)
	for i := range tooMany {
		tooMany[i] = OpRequest{Partition: 0, Op: OpGet, Key: keyIn("new", 0)}
	}
	if _, err := n.server.serveOpBatch(ctx, "test", mustMarshal(t, tooMany)); !errors.Is(err, ErrBadMessage) {
		t.Errorf("a batch of %d operations: %v; want it refused", len(tooMany), err)
	}
}

// encodeArray's output decodes as the array of the requests it joined, on both sides of the
// fixarray/array16 boundary.
func TestEncodeArray(t *testing.T) {
	for _, n := range []int{2, 15, 16, 17, forwardBatchOps} {
		batch := make([]*forwardedOp, n)
		for i := range batch {
			batch[i] = &forwardedOp{msg: mustMarshal(t, &OpRequest{Partition: i, Op: OpGet, Key: fmt.Sprint("k", i)})}
		}
		var reqs []OpRequest
		if err := Unmarshal(encodeArray(batch), &reqs); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(reqs) != n || reqs[n-1].Key != fmt.Sprint("k", n-1) || reqs[n-1].Partition != n-1 {
			t.Fatalf("n=%d: decoded %d requests, last %+v", n, len(reqs), reqs[len(reqs)-1])
		}
	}
}
