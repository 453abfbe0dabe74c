package gridkv

// Hostile input from the network and from callers, against one in-memory node: the decoders
// of forwarded requests and responses, the server-side validation path they feed, the public
// API's argument checks, and the recovery of a handler that panics.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/vmihailenco/msgpack/v5"
)

// fuzzPartitions keeps a fuzzing node small: fewer groups start faster and idle cheaper.
const fuzzPartitions = 4

// startFuzzNode starts a one-node cluster and waits until it is ready; the node closes when tb
// ends. It cannot use internal/cluster (that package imports this one).
func startFuzzNode(tb testing.TB) *GridKV {
	tb.Helper()
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		addr, err := freeport.Addr()
		if err != nil {
			tb.Fatal(err)
		}
		timings := LocalTimings()
		kv, err := NewGridKV(&GridKVOptions{
			LocalNodeID:  "fuzz",
			LocalAddress: addr,
			Partitions:   fuzzPartitions,
			Timings:      &timings,
		})
		if err != nil {
			lastErr = err
			continue // most likely another process took the port
		}
		tb.Cleanup(func() { _ = kv.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kv.WaitReady(ctx); err != nil {
			tb.Fatalf("fuzz node not ready: %v", err)
		}
		return kv
	}
	tb.Fatalf("starting the fuzz node: %v", lastErr)
	return nil
}

// keyIn returns a key of partition p, so seeds reach the write path rather than the
// partition check.
func keyIn(prefix string, p int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s-%d", prefix, i); ring.PartitionOf(k, fuzzPartitions) == p {
			return k
		}
	}
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzOpRequest feeds arbitrary bytes to the handler of forwarded operations, as a peer (or
// anyone reaching the port) could. The handler must not panic; it either rejects the bytes
// with a "bad message" error or answers with a response that decodes to a clean error.
func FuzzOpRequest(f *testing.F) {
	k0 := keyIn("seed", 0)
	seeds := []opRequest{
		{Partition: 0, Op: opSet, Key: k0, Value: []byte("v"), TimeoutMS: 2000},
		{Partition: 0, Op: opGet, Key: k0},
		{Partition: 0, Op: opGet, Key: k0, Stale: true},
		{Partition: 0, Op: opDelete, Key: k0, TimeoutMS: 2000},
		{Partition: 0, Op: opCAS, Key: k0, Value: []byte("w"), Version: 0, TimeoutMS: 2000},
		{Partition: 0, Op: opSet, Key: k0, Ack: int(raftgroup.AckApplied), Replicas: 1 << 30},
		{Partition: 0, Op: opSet, Key: k0, Ack: -7, Replicas: -1},
		{Partition: 1, Op: opSet, Key: k0},       // the wrong partition for the key
		{Partition: -1, Op: opGet, Key: k0},      // out of range
		{Partition: 1 << 40, Op: opGet, Key: k0}, // far out of range
		{Partition: 0, Op: opSet, Key: ""},       // empty key
		{Partition: 0, Op: opSet, Key: strings.Repeat("k", MaxKeySize+1)},
		{Partition: 0, Op: 0, Key: k0},                         // no operation
		{Partition: 0, Op: 200, Key: k0},                       // unknown operation
		{Partition: 0, Op: opGet, Key: k0, TimeoutMS: -5},      // negative timeout
		{Partition: 0, Op: opGet, Key: k0, TimeoutMS: 1 << 62}, // overflowing timeout
		{Partition: 0, Op: opSet, Key: k0, Value: []byte{0xff, 0xfe}, TimeoutMS: 1},
		{Partition: 0, Op: opGet, Key: k0, VouchServer: "fuzz/1", VouchTerm: 1, TimeoutMS: 2000},
		{Partition: 0, Op: opGet, Key: k0, VouchServer: "other/2", VouchTerm: ^uint64(0)},
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

	kv := startFuzzNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := kv.serveOp(ctx, "fuzz", data)
		if err != nil {
			if out != nil || !strings.Contains(err.Error(), "bad message") {
				t.Fatalf("rejection returned %d bytes and %v, want none and a bad message error", len(out), err)
			}
			return
		}
		var resp opResponse
		if err := decodeOne(out, &resp, decodeOpResponse); err != nil {
			t.Fatalf("the node answered with a response it cannot decode: %v", err)
		}
		var req, again opRequest
		if err := decodeOne(data, &req, decodeOpRequest); err != nil {
			t.Fatalf("serveOp accepted bytes that do not decode: %v", err)
		}
		// What this version accepted, written again, reads the same through reflection (an
		// older version's decoder).
		if err := msgpack.Unmarshal(encodeOpRequest(&req), &again); err != nil || !sameRequest(again, req) {
			t.Fatalf("request %+v re-encoded reads back through reflection as %+v, %v", req, again, err)
		}
		invalid := req.Partition < 0 || req.Partition >= fuzzPartitions || req.Key == "" ||
			len(req.Key) > MaxKeySize || ring.PartitionOf(req.Key, fuzzPartitions) != req.Partition ||
			req.Op < opGet || req.Op > opCAS || req.Op != opGet && len(req.Value) > MaxValueSize
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
	f.Add(mustMarshal(f, []opRequest{
		{Partition: 0, Op: opSet, Key: k0, Value: []byte("v"), TimeoutMS: 2000},
		{Partition: 1, Op: opGet, Key: k1, TimeoutMS: 2000},
	}))
	f.Add(mustMarshal(f, []opRequest{
		{Partition: 1, Op: opGet, Key: k1, VouchServer: "fuzz/1", VouchTerm: 1, TimeoutMS: 2000},
		{Partition: 0, Op: opGet, Key: k0, VouchServer: "other/2", VouchTerm: ^uint64(0), TimeoutMS: 2000},
	}))
	f.Add(mustMarshal(f, []opRequest{
		{Partition: 0, Op: opCAS, Key: k0, Value: []byte("w"), TimeoutMS: 2000},
		{Partition: 1, Op: opSet, Key: k0}, // the wrong partition
		{Partition: -1, Op: 200, Key: ""},  // everything wrong
	}))
	f.Add(mustMarshal(f, []opRequest{}))
	f.Add(mustMarshal(f, &opRequest{Partition: 0, Op: opGet, Key: k0})) // a single request, not an array
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})                         // an array claiming 2^32-1 requests
	f.Add([]byte{0xdc, 0x01, 0x01})                                     // 257 requests declared, none there
	f.Add([]byte{0x92, 0xc0, 0xc0})                                     // two nils

	kv := startFuzzNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := kv.serveOpBatch(ctx, "fuzz", data)
		if err != nil {
			if out != nil || !strings.Contains(err.Error(), "bad message") {
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

	kv := startFuzzNode(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := kv.serveTermChecks(context.Background(), "fuzz", data)
		if err != nil {
			if out != nil {
				t.Fatalf("rejection returned %d bytes", len(out))
			}
			return
		}
		var checks []raftgroup.TermCheck
		if err := unmarshal(data, &checks); err != nil {
			t.Fatalf("serveTermChecks accepted bytes that do not decode: %v", err)
		}
		var oks []bool
		if err := unmarshal(out, &oks); err != nil {
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
			if !strings.Contains(err.Error(), "bad message") {
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

// FuzzSetGet drives the public API with arbitrary keys and values, including empty, oversized
// and invalid UTF-8 ones: Set either succeeds, and then Get returns exactly the value, or fails
// with ErrInvalidKey or ErrValueTooLarge as the limits say.
func FuzzSetGet(f *testing.F) {
	f.Add("k", []byte("v"), false, false)
	f.Add("", []byte("v"), false, false)
	f.Add("k", []byte{}, false, false)
	f.Add("k", []byte(nil), false, false)
	f.Add("\xff\xfe\x00bad utf-8", []byte{0, 0xff}, false, false)
	f.Add("long", []byte("v"), true, false)
	f.Add("big", []byte("v"), false, true)
	f.Add("", []byte("v"), false, true)
	f.Add(strings.Repeat("x", MaxKeySize), []byte("edge"), false, false)

	kv := startFuzzNode(f)
	f.Fuzz(func(t *testing.T, key string, value []byte, longKey, bigValue bool) {
		if longKey {
			key += strings.Repeat("k", MaxKeySize+1-min(len(key), MaxKeySize))
		}
		if bigValue {
			value = append(value, make([]byte, MaxValueSize+1-min(len(value), MaxValueSize))...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kept := bytes.Clone(value)
		err := kv.Set(ctx, key, value)
		switch {
		case key == "" || len(key) > MaxKeySize:
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("Set with a %d-byte key: err = %v, want ErrInvalidKey", len(key), err)
			}
			if _, err := kv.Get(ctx, key); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("Get with a %d-byte key: err = %v, want ErrInvalidKey", len(key), err)
			}
			return
		case len(value) > MaxValueSize:
			if !errors.Is(err, ErrValueTooLarge) {
				t.Fatalf("Set of a %d-byte value: err = %v, want ErrValueTooLarge", len(value), err)
			}
			return
		case err != nil:
			t.Fatalf("Set(%q, %d bytes): %v", key, len(value), err)
		}
		for i := range value {
			value[i] ^= 0xff // the stored value must be a copy
		}
		got, err := kv.Get(ctx, key)
		if err != nil || !bytes.Equal(got, kept) {
			t.Fatalf("Get(%q) = %d bytes, %v; want the %d bytes set", key, len(got), err, len(kept))
		}
		e, err := kv.GetEntry(ctx, key, WithConsistency(Stale))
		if err != nil || !bytes.Equal(e.Value, kept) || e.Version == 0 {
			t.Fatalf("stale GetEntry(%q) = %d bytes at version %d, %v", key, len(e.Value), e.Version, err)
		}
		if err := kv.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		if _, err := kv.Get(ctx, key); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("Get after Delete(%q): %v, want ErrKeyNotFound", key, err)
		}
	})
}

// kindPanicky is a request kind only the test below registers.
const kindPanicky uint8 = 250

// A panic in a handler of forwarded requests fails that request only: the node keeps
// answering other requests, on the same connection and at the same time.
func TestForwardedHandlerPanicFailsOnlyThatRequest(t *testing.T) {
	kv := startFuzzNode(t)
	// A handler that panics on one key and serves every other like the real one.
	kv.trans.Handle(kindPanicky, func(ctx context.Context, from string, b []byte) ([]byte, error) {
		var req opRequest
		if err := unmarshal(b, &req); err == nil && req.Key == "boom" {
			panic("injected handler panic")
		}
		return kv.serveOp(ctx, from, b)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	boom := mustMarshal(t, &opRequest{Partition: ring.PartitionOf("boom", fuzzPartitions), Op: opSet, Key: "boom", Value: []byte("x")})

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 16; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := kv.trans.Call(ctx, kv.trans.Addr(), kindPanicky, boom); err == nil {
				errs <- errors.New("a request whose handler panicked succeeded")
			}
		}()
		go func() {
			defer wg.Done()
			key := keyIn(fmt.Sprint("calm-", i), i%fuzzPartitions)
			req := mustMarshal(t, &opRequest{Partition: i % fuzzPartitions, Op: opSet, Key: key, Value: []byte("v"), TimeoutMS: 20000})
			out, err := kv.trans.Call(ctx, kv.trans.Addr(), kindPanicky, req)
			if err != nil {
				errs <- fmt.Errorf("a healthy request failed next to panicking ones: %w", err)
				return
			}
			var resp opResponse
			if err := unmarshal(out, &resp); err != nil || resp.Code != codeOK {
				errs <- fmt.Errorf("a healthy request answered %+v, %v", resp, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, _, ok := kv.groups.Group(ring.PartitionOf("boom", fuzzPartitions)).Partition().Get("boom"); ok {
		t.Error("the request whose handler panicked took effect")
	}
	if err := kv.Set(ctx, "after", []byte("v")); err != nil {
		t.Fatalf("Set after handler panics: %v", err)
	}
}

// A message must not make its receiver allocate more than it could possibly contain. msgpack
// v5.4.1 decodes a []byte field by allocating the length the message declares before reading
// it (Decoder.bytesPtr calls readN, which has no allocation limit), so an 8-byte opRequest or
// opResponse that declares a 4 GiB value makes the node allocate 4 GiB. Found by
// FuzzOpResponse: the fuzzing worker died. The fix belongs in wire.go's unmarshal (bound
// declared lengths by the bytes left, or decode values through a type that checks the length
// against MaxValueSize first); until then this test is skipped.
func TestUnmarshalDoesNotTrustDeclaredLengths(t *testing.T) {
	for _, msg := range [][]byte{
		{0x81, 0xa1, 'v', 0xc6, 0xff, 0xff, 0xff, 0xff}, // {"v": bin32 of 4 GiB}, then nothing
		{0x81, 0xa1, 'v', 0xdb, 0xff, 0xff, 0xff, 0xff}, // the same as str32
	} {
		for _, v := range []any{&opRequest{}, &opResponse{}} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := unmarshal(msg, v)
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
