package protocol

// Hostile input from the network: the decoders of forwarded requests and responses, the
// server-side validation path they feed, and the recovery of a handler that panics.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
	"github.com/vmihailenco/msgpack/v5"
)

// FuzzOpRequest feeds arbitrary bytes to the handler of forwarded operations, as a peer (or
// anyone reaching the port) could. The handler must not panic; it either rejects the bytes
// with a "bad message" error or answers with a response that decodes to a clean error.
func FuzzOpRequest(f *testing.F) {
	k0 := keyIn("seed", 0)
	seeds := []OpRequest{
		{Partition: 0, Op: OpSet, Key: k0, Value: []byte("v"), TimeoutMS: 2000},
		{Partition: 0, Op: OpGet, Key: k0},
		{Partition: 0, Op: OpGet, Key: k0, Stale: true},
		{Partition: 0, Op: OpDelete, Key: k0, TimeoutMS: 2000},
		{Partition: 0, Op: OpCAS, Key: k0, Value: []byte("w"), Version: 0, TimeoutMS: 2000},
		{Partition: 0, Op: OpSet, Key: k0, Ack: int(raftgroup.AckApplied), Replicas: 1 << 30},
		{Partition: 0, Op: OpSet, Key: k0, Ack: -7, Replicas: -1},
		{Partition: 1, Op: OpSet, Key: k0},       // the wrong partition for the key
		{Partition: -1, Op: OpGet, Key: k0},      // out of range
		{Partition: 1 << 40, Op: OpGet, Key: k0}, // far out of range
		{Partition: 0, Op: OpSet, Key: ""},       // empty key
		{Partition: 0, Op: OpSet, Key: strings.Repeat("k", store.MaxKeySize+1)},
		{Partition: 0, Op: 0, Key: k0},                         // no operation
		{Partition: 0, Op: 200, Key: k0},                       // unknown operation
		{Partition: 0, Op: OpGet, Key: k0, TimeoutMS: -5},      // negative timeout
		{Partition: 0, Op: OpGet, Key: k0, TimeoutMS: 1 << 62}, // overflowing timeout
		{Partition: 0, Op: OpSet, Key: k0, Value: []byte{0xff, 0xfe}, TimeoutMS: 1},
		{Partition: 0, Op: OpGet, Key: k0, VouchServer: "fuzz/1", VouchTerm: 1, TimeoutMS: 2000},
		{Partition: 0, Op: OpGet, Key: k0, VouchServer: "other/2", VouchTerm: ^uint64(0)},
	}
	for _, s := range seeds {
		f.Add(mustMarshal(f, &s))
	}
	f.Add([]byte{})
	f.Add([]byte{0xc0})                         // nil
	f.Add([]byte{0x93, 1, 2, 3})                // an array, not a map
	f.Add([]byte{0x81, 0xa1, 'p', 0xa1, 'x'})   // a string where a number goes
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}) // a map claiming 2^32-1 entries
	valid := mustMarshal(f, &seeds[0])
	f.Add(valid[:len(valid)/2]) // truncated

	n := startTestNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := n.server.serveOp(ctx, "fuzz", data)
		if err != nil {
			if out != nil || !errors.Is(err, ErrBadMessage) {
				t.Fatalf("rejection returned %d bytes and %v, want none and a bad message error", len(out), err)
			}
			return
		}
		var resp opResponse
		if err := decodeOne(out, &resp, decodeOpResponse); err != nil {
			t.Fatalf("the node answered with a response it cannot decode: %v", err)
		}
		var req, again OpRequest
		if err := decodeOne(data, &req, decodeOpRequest); err != nil {
			t.Fatalf("serveOp accepted bytes that do not decode: %v", err)
		}
		// What this version accepted, written again, reads the same through reflection (an
		// older version's decoder).
		if err := msgpack.Unmarshal(encodeOpRequest(&req), &again); err != nil || !sameRequest(again, req) {
			t.Fatalf("request %+v re-encoded reads back through reflection as %+v, %v", req, again, err)
		}
		invalid := req.Partition < 0 || req.Partition >= testPartitions || req.Key == "" ||
			len(req.Key) > store.MaxKeySize || ring.PartitionOf(req.Key, testPartitions) != req.Partition ||
			req.Op < OpGet || req.Op > OpCAS || req.Op != OpGet && len(req.Value) > store.MaxValueSize
		if invalid && resp.Code != codeInvalid {
			t.Fatalf("invalid request %+v answered with code %d (%s), want codeInvalid", req, resp.Code, resp.Msg)
		}
		if resp.Code == codeOK && invalid {
			t.Fatalf("invalid request %+v succeeded", req)
		}
		if derr := decodeError(req.Partition, &resp); (derr == nil) != (resp.Code == codeOK) {
			t.Fatalf("code %d decoded to %v", resp.Code, derr)
		}
	})
}

// FuzzOpBatch feeds arbitrary bytes to the handler of batches of forwarded operations. It
// must not panic; it either rejects the bytes with a "bad message" error or answers every
// request of the batch, in order, with a response that decodes.
func FuzzOpBatch(f *testing.F) {
	k0, k1 := keyIn("seed", 0), keyIn("seed", 1)
	f.Add(mustMarshal(f, []OpRequest{
		{Partition: 0, Op: OpSet, Key: k0, Value: []byte("v"), TimeoutMS: 2000},
		{Partition: 1, Op: OpGet, Key: k1, TimeoutMS: 2000},
	}))
	f.Add(mustMarshal(f, []OpRequest{
		{Partition: 1, Op: OpGet, Key: k1, VouchServer: "fuzz/1", VouchTerm: 1, TimeoutMS: 2000},
		{Partition: 0, Op: OpGet, Key: k0, VouchServer: "other/2", VouchTerm: ^uint64(0), TimeoutMS: 2000},
	}))
	f.Add(mustMarshal(f, []OpRequest{
		{Partition: 0, Op: OpCAS, Key: k0, Value: []byte("w"), TimeoutMS: 2000},
		{Partition: 1, Op: OpSet, Key: k0}, // the wrong partition
		{Partition: -1, Op: 200, Key: ""},  // everything wrong
	}))
	f.Add(mustMarshal(f, []OpRequest{}))
	f.Add(mustMarshal(f, &OpRequest{Partition: 0, Op: OpGet, Key: k0})) // a single request, not an array
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})                         // an array claiming 2^32-1 requests
	f.Add([]byte{0xdc, 0x01, 0x01})                                     // 257 requests declared, none there
	f.Add([]byte{0x92, 0xc0, 0xc0})                                     // two nils

	n := startTestNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := n.server.serveOpBatch(ctx, "fuzz", data)
		if err != nil {
			if out != nil || !errors.Is(err, ErrBadMessage) {
				t.Fatalf("rejection returned %d bytes and %v, want none and a bad message error", len(out), err)
			}
			return
		}
		reqs, err := decodeArray(data, forwardBatchOps, decodeOpRequest)
		if err != nil {
			t.Fatalf("serveOpBatch accepted bytes that do not decode: %v", err)
		}
		resps, err := decodeArray(out, len(reqs), decodeOpResponse)
		if err != nil {
			t.Fatalf("the node answered with a response it cannot decode: %v", err)
		}
		if len(resps) != len(reqs) {
			t.Fatalf("%d answers to %d requests", len(resps), len(reqs))
		}
	})
}

// FuzzTermChecks feeds arbitrary bytes to the handler of a leader's term checks. It must not
// panic; it rejects the bytes or answers one boolean per check.
func FuzzTermChecks(f *testing.F) {
	f.Add(mustMarshal(f, []raftgroup.TermCheck{{Partition: 0, Server: "fuzz/1", Term: 1}, {Partition: 3, Server: "x", Term: 0}}))
	f.Add(mustMarshal(f, []raftgroup.TermCheck{{Partition: -1}, {Partition: 1 << 40, Term: ^uint64(0)}}))
	f.Add(mustMarshal(f, []raftgroup.TermCheck{}))
	f.Add(mustMarshal(f, make([]raftgroup.TermCheck, raftgroup.MaxTermChecks+1))) // one too many
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})                                   // an array claiming 2^32-1 checks

	n := startTestNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := n.server.serveTermChecks(context.Background(), "fuzz", data)
		if err != nil {
			if out != nil {
				t.Fatalf("rejection returned %d bytes", len(out))
			}
			return
		}
		var checks []raftgroup.TermCheck
		if err := Unmarshal(data, &checks); err != nil {
			t.Fatalf("serveTermChecks accepted bytes that do not decode: %v", err)
		}
		var oks []bool
		if err := Unmarshal(out, &oks); err != nil {
			t.Fatalf("the node answered with a response it cannot decode: %v", err)
		}
		if len(oks) != len(checks) {
			t.Fatalf("%d answers to %d checks", len(oks), len(checks))
		}
	})
}

// FuzzOpResponse feeds arbitrary bytes to the decoding of a forwarded operation's answer. It
// must not panic; a response that decodes maps to nil exactly when its code is OK, and the
// mapping is stable: encoding the decoded error again gives a code that decodes to the same.
func FuzzOpResponse(f *testing.F) {
	for code := codeOK; code <= codeFailed+1; code++ {
		resp := opResponse{Code: code, Msg: "m", LeaderID: "n1", LeaderAddr: "127.0.0.1:1", Value: []byte("v"), Version: 9}
		f.Add(mustMarshal(f, &resp), 3)
	}
	f.Add(mustMarshal(f, &opResponse{Code: 255}), -1)
	f.Add([]byte{}, 0)
	f.Add([]byte{0x81, 0xa1, 'c', 0xcd, 0x01, 0x00}, 0) // a code that overflows uint8
	f.Fuzz(func(t *testing.T, data []byte, p int) {
		var resp, again opResponse
		if err := decodeOne(data, &resp, decodeOpResponse); err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("decode error %v is not marked as a bad message", err)
			}
			return
		}
		if err := msgpack.Unmarshal(encodeOpResponse(&resp), &again); err != nil || !sameResponse(again, resp) {
			t.Fatalf("response %+v re-encoded reads back through reflection as %+v, %v", resp, again, err)
		}
		err := decodeError(p, &resp)
		if (err == nil) != (resp.Code == codeOK) {
			t.Fatalf("code %d decoded to %v", resp.Code, err)
		}
		var once, twice opResponse
		encodeError(err, &once)
		encodeError(decodeError(p, &once), &twice)
		if once.Code != twice.Code {
			t.Fatalf("code %d -> %v -> code %d -> code %d: not stable", resp.Code, err, once.Code, twice.Code)
		}
		var nl *raftgroup.NotLeaderError
		if errors.As(err, &nl) && (nl.Group != p || nl.LeaderID != resp.LeaderID && resp.Code == codeNotLeader) {
			t.Fatalf("not-leader answer %+v lost its partition or leader: %+v", resp, nl)
		}
	})
}

// kindPanicky is a request kind only the test below registers.
const kindPanicky uint8 = 250

// A panic in a handler of forwarded requests fails that request only: the node keeps
// answering other requests, on the same connection and at the same time.
func TestForwardedHandlerPanicFailsOnlyThatRequest(t *testing.T) {
	n := startTestNode(t)
	// A handler that panics on one key and serves every other like the real one.
	n.trans.Handle(kindPanicky, func(ctx context.Context, from string, b []byte) ([]byte, error) {
		var req OpRequest
		if err := Unmarshal(b, &req); err == nil && req.Key == "boom" {
			panic("injected handler panic")
		}
		return n.server.serveOp(ctx, from, b)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	boom := mustMarshal(t, &OpRequest{Partition: ring.PartitionOf("boom", testPartitions), Op: OpSet, Key: "boom", Value: []byte("x")})

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 16; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := n.trans.Call(ctx, n.trans.Addr(), kindPanicky, boom); err == nil {
				errs <- errors.New("a request whose handler panicked succeeded")
			}
		}()
		go func() {
			defer wg.Done()
			key := keyIn(fmt.Sprint("calm-", i), i%testPartitions)
			req := mustMarshal(t, &OpRequest{Partition: i % testPartitions, Op: OpSet, Key: key, Value: []byte("v"), TimeoutMS: 20000})
			out, err := n.trans.Call(ctx, n.trans.Addr(), kindPanicky, req)
			if err != nil {
				errs <- fmt.Errorf("a healthy request failed next to panicking ones: %w", err)
				return
			}
			var resp opResponse
			if err := Unmarshal(out, &resp); err != nil || resp.Code != codeOK {
				errs <- fmt.Errorf("a healthy request answered %+v, %v", resp, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, ok := n.backend.get("boom"); ok {
		t.Error("the request whose handler panicked took effect")
	}
	after := keyIn("after", 0)
	if _, err := n.client.Forward(ctx, n.trans.Addr(), &OpRequest{Partition: 0, Op: OpSet, Key: after, Value: []byte("v")}); err != nil {
		t.Fatalf("a forwarded Set after handler panics: %v", err)
	}
}

// A message must not make its receiver allocate more than it could possibly contain. msgpack
// v5.4.1 decodes a []byte field by allocating the length the message declares before reading
// it (Decoder.bytesPtr calls readN, which has no allocation limit), so an 8-byte OpRequest or
// opResponse that declares a 4 GiB value would make the node allocate 4 GiB. Found by
// FuzzOpResponse, whose fuzzing worker died; Unmarshal now walks the message with Check first,
// which refuses any declared length the bytes that follow cannot hold.
func TestUnmarshalDoesNotTrustDeclaredLengths(t *testing.T) {
	for _, msg := range [][]byte{
		{0x81, 0xa1, 'v', 0xc6, 0xff, 0xff, 0xff, 0xff}, // {"v": bin32 of 4 GiB}, then nothing
		{0x81, 0xa1, 'v', 0xdb, 0xff, 0xff, 0xff, 0xff}, // the same as str32
	} {
		for _, v := range []any{&OpRequest{}, &opResponse{}} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := Unmarshal(msg, v)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("%T: a truncated message decoded", v)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("%T: an %d-byte message made the decoder allocate %d MiB", v, len(msg), grew>>20)
			}
		}
	}
}

// FuzzListRequest feeds arbitrary bytes to the handler of list requests. It must not panic;
// it refuses the bytes as a bad message, or answers with a page that decodes, in key order,
// within the limit asked.
func FuzzListRequest(f *testing.F) {
	for _, r := range []listRequest{
		{Partition: 0, Prefix: "a", Limit: 10, TimeoutMS: 1000},
		{Partition: 1, StartAfter: "k", Limit: 0},
		{Partition: -1, Limit: 5},
		{Partition: 0, Limit: MaxListLimit + 1},
		{Partition: 0, Prefix: strings.Repeat("p", store.MaxKeySize+1), Limit: 1},
		{Partition: 2, Stale: true, VouchServer: "x", VouchTerm: 3, Limit: 100},
	} {
		f.Add(mustMarshal(f, &r))
	}
	f.Add([]byte{0x81, 0xa1, 'l', 0xd2, 0xff, 0xff, 0xff, 0xff}) // a limit of -1
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	n := startTestNode(f)
	ctx := context.Background()
	for i := range 20 {
		key := fmt.Sprint("a", i)
		if _, err := n.backend.write(store.Command{Op: store.OpSet, Key: key, Value: []byte("v")}); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := n.server.serveList(ctx, "fuzz", data)
		if err != nil {
			if out != nil || !errors.Is(err, ErrBadMessage) {
				t.Fatalf("rejection returned %d bytes and %v, want none and ErrBadMessage", len(out), err)
			}
			return
		}
		var req listRequest
		if err := Unmarshal(data, &req); err != nil {
			t.Fatalf("serveList accepted bytes that do not decode: %v", err)
		}
		var resp listResponse
		if err := Unmarshal(out, &resp); err != nil {
			t.Fatalf("the answer does not decode: %v", err)
		}
		if resp.Code == codeOK && len(resp.Entries) > max(req.Limit, 0) {
			t.Fatalf("%d entries for a limit of %d", len(resp.Entries), req.Limit)
		}
		for i := 1; i < len(resp.Entries); i++ {
			if resp.Entries[i].Key <= resp.Entries[i-1].Key {
				t.Fatalf("entries out of order: %q after %q", resp.Entries[i].Key, resp.Entries[i-1].Key)
			}
		}
	})
}

// FuzzEventsRequest feeds arbitrary bytes to the handler of requests for changes: no panic,
// no wait beyond the request's bound, and an answer that decodes.
func FuzzEventsRequest(f *testing.F) {
	for _, r := range []eventsRequest{
		{Partition: 0, After: 0, Max: 10},
		{Partition: 1, After: 5, Prefix: "a", Max: 1, WaitMS: 1},
		{Partition: 0, Max: 0},
		{Partition: 0, Max: MaxEvents + 1},
		{Partition: 9, Max: 3},
		{Partition: 0, Max: 3, WaitMS: -5},
	} {
		f.Add(mustMarshal(f, &r))
	}
	f.Add([]byte{0x81, 0xa1, 'n', 0xce, 0xff, 0xff, 0xff, 0xff})
	n := startTestNode(f)
	n.backend.events = []store.Event{{Type: store.EventPut, Key: "a", Value: []byte("v"), Version: 7}, {Type: store.EventDelete, Key: "b", Version: 9}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req eventsRequest
		if err := Unmarshal(data, &req); err == nil && req.WaitMS > 100 {
			return // a long wait is allowed, and would only slow the fuzzer
		}
		out, err := n.server.serveEvents(context.Background(), "fuzz", data)
		if err != nil {
			if out != nil || !errors.Is(err, ErrBadMessage) {
				t.Fatalf("rejection returned %d bytes and %v, want none and ErrBadMessage", len(out), err)
			}
			return
		}
		var resp eventsResponse
		if err := Unmarshal(out, &resp); err != nil {
			t.Fatalf("the answer does not decode: %v", err)
		}
		if resp.Code == codeOK && len(resp.Events) > req.Max {
			t.Fatalf("%d events for a maximum of %d", len(resp.Events), req.Max)
		}
	})
}

// answerWith is a Caller whose every call is answered with the same bytes.
type answerWith []byte

func (a answerWith) Call(context.Context, string, uint8, []byte) ([]byte, error) { return a, nil }

// FuzzConfigAnswers feeds arbitrary bytes to the client's reading of list and change answers,
// as a peer could send them: no panic, and whatever is accepted is in order and within what
// was asked.
func FuzzConfigAnswers(f *testing.F) {
	f.Add(mustMarshal(f, &listResponse{Entries: []wireEntry{{Key: "a", Version: 1}, {Key: "b", Version: 2}}, More: true, Position: 9}))
	f.Add(mustMarshal(f, &listResponse{Entries: []wireEntry{{Key: "b"}, {Key: "a"}}}))
	f.Add(mustMarshal(f, &eventsResponse{Events: []wireEvent{{Type: 1, Key: "a", Version: 5}, {Type: 3, Key: "a", Version: 6}}, Next: 6}))
	f.Add(mustMarshal(f, &eventsResponse{Events: []wireEvent{{Type: 9, Key: "a", Version: 5}}, Next: 1}))
	f.Add(mustMarshal(f, &eventsResponse{Code: codeCompacted, Msg: "gone"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewClient(answerWith(data), 1<<20, nil)
		defer c.Close()
		ctx := context.Background()
		res, err := c.List(ctx, "peer", 0, ListPage{Limit: 5}, ReadMode{})
		if err == nil {
			if len(res.Entries) > 5 {
				t.Fatalf("%d entries accepted for a limit of 5", len(res.Entries))
			}
			for i := 1; i < len(res.Entries); i++ {
				if res.Entries[i].Key <= res.Entries[i-1].Key {
					t.Fatal("entries out of order accepted")
				}
			}
		}
		events, next, err := c.Events(ctx, "peer", 0, 4, "", 3, 0)
		if err == nil {
			last := uint64(4)
			for _, e := range events {
				if e.Version <= last || e.Type < store.EventPut || e.Type > store.EventExpire {
					t.Fatalf("event %+v accepted out of order or of unknown type", e)
				}
				last = e.Version
			}
			if len(events) > 3 || next < last {
				t.Fatalf("%d events and next %d after %d accepted", len(events), next, last)
			}
		}
	})
}
