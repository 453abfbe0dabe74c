package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func codecRequests() []OpRequest {
	return []OpRequest{
		{},
		{Partition: 3, Op: OpGet, Key: "k", TimeoutMS: 1500},
		{Partition: 7, Op: OpSet, Key: "key", Value: []byte("value"), Ack: 3, Replicas: 2, TimeoutMS: 1},
		{Partition: 1, Op: OpCAS, Key: "c", Value: []byte{0}, Version: 1 << 40, TimeoutMS: -1},
		{Partition: -5, Op: OpDelete, Key: strings.Repeat("x", 31), Stale: true},
		{Partition: 1 << 20, Op: 255, Key: strings.Repeat("y", 300), Value: bytes.Repeat([]byte{1}, 70000), Version: ^uint64(0)},
		{Partition: 2, Op: OpGet, Key: strings.Repeat("z", 70000), VouchServer: "node-1/1f", VouchTerm: 9, TimeoutMS: -1 << 40},
		{Ack: -40, Replicas: -200, TimeoutMS: -40000},
	}
}

func codecResponses() []opResponse {
	return []opResponse{
		{},
		{Code: codeOK, Value: []byte("v"), Version: 5, Applied: 9, ExpiresAt: 1_800_000_000_000_000_000},
		{Code: codeNotLeader, LeaderID: "n2", LeaderAddr: "127.0.0.1:7000", Msg: "not leader"},
		{Code: codeFailed, Msg: strings.Repeat("m", 300), Value: bytes.Repeat([]byte{7}, 256)},
		{Code: 255, Version: ^uint64(0), Applied: 1 << 33},
	}
}

// The hand-written forms and msgpack's reflection read each other's bytes: nodes running
// either understand one another.
func TestOpCodecMatchesReflection(t *testing.T) {
	checkAgainstReflection(t, codecRequests(), encodeOpRequest, decodeOpRequest, sameRequest)
	checkAgainstReflection(t, codecResponses(), encodeOpResponse, decodeOpResponse, sameResponse)
}

func checkAgainstReflection[T any](t *testing.T, values []T, encode func(*T) []byte, decode func([]byte, *T) ([]byte, error), same func(a, b T) bool) {
	t.Helper()
	for _, want := range values {
		var fromReflect, fromHand T
		if err := msgpack.Unmarshal(encode(&want), &fromReflect); err != nil {
			t.Fatalf("reflection cannot read %+v as written by hand: %v", want, err)
		}
		b, err := msgpack.Marshal(&want)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeOne(b, &fromHand, decode); err != nil {
			t.Fatalf("cannot read %+v as reflection writes it: %v", want, err)
		}
		for _, got := range []T{fromReflect, fromHand} {
			if !same(got, want) {
				t.Errorf("%+v came back as %+v", want, got)
			}
		}
	}
}

// sameRequest compares requests, with a nil and an empty value alike (omitempty drops both).
func sameRequest(a, b OpRequest) bool {
	if !bytes.Equal(a.Value, b.Value) {
		return false
	}
	a.Value, b.Value = nil, nil
	return reflect.DeepEqual(a, b)
}

func sameResponse(a, b opResponse) bool {
	if !bytes.Equal(a.Value, b.Value) {
		return false
	}
	a.Value, b.Value = nil, nil
	return reflect.DeepEqual(a, b)
}

// Encodings other than the ones written here are read too: wider integers, nil for empty
// fields, bin for strings and str for bytes, keys this version does not know.
func TestOpCodecReadsOtherEncodings(t *testing.T) {
	b, err := msgpack.Marshal(map[string]any{
		"p":      int64(4),
		"o":      uint16(OpSet),
		"k":      []byte("key"),
		"v":      "value",
		"ver":    int32(12),
		"s":      nil,
		"t":      uint64(250),
		"future": map[string]any{"x": []any{1, "two", 3.0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got OpRequest
	if err := decodeOne(b, &got, decodeOpRequest); err != nil {
		t.Fatal(err)
	}
	want := OpRequest{Partition: 4, Op: OpSet, Key: "key", Value: []byte("value"), Version: 12, TimeoutMS: 250}
	if !sameRequest(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestOpCodecRefusesBadMessages(t *testing.T) {
	valid := encodeOpRequest(&OpRequest{Partition: 1, Op: OpSet, Key: "key", Value: []byte("value"), TimeoutMS: 300})
	var r OpRequest
	for n := range len(valid) {
		if err := decodeOne(valid[:n], &r, decodeOpRequest); err == nil {
			t.Errorf("a request cut to %d of %d bytes decoded", n, len(valid))
		}
	}
	if err := decodeOne(append(valid, 0xc0), &r, decodeOpRequest); err == nil {
		t.Error("a request with a byte after it decoded")
	}
	for name, m := range map[string]any{
		"op beyond a byte": map[string]any{"o": 256},
		"negative version": map[string]any{"ver": -1},
		"float partition":  map[string]any{"p": 1.5},
		"key not a string": map[string]any{"k": 7},
		"stale not a bool": map[string]any{"s": "yes"},
		"not a map":        []any{1, 2},
	} {
		b, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeOne(b, &r, decodeOpRequest); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want a bad message error", name, err)
		}
	}
	if err := decodeOne([]byte{0xdf, 0x00, 0x0f, 0x42, 0x40, 0xc0}, &r, decodeOpRequest); err == nil {
		t.Error("a map declaring a million entries in one byte decoded")
	}
	if _, err := decodeArray([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, forwardBatchOps, decodeOpRequest); err == nil {
		t.Error("an array declaring 2^32-1 requests decoded")
	}
	over := appendArrayLen(nil, forwardBatchOps+1)
	for range forwardBatchOps + 1 {
		over = appendOpRequest(over, &OpRequest{})
	}
	if _, err := decodeArray(over, forwardBatchOps, decodeOpRequest); err == nil {
		t.Errorf("a batch of %d requests decoded, the limit is %d", forwardBatchOps+1, forwardBatchOps)
	}
}

// The codecs against msgpack's reflection, which they replace on the forwarding path.
func BenchmarkOpRequestCodec(b *testing.B) {
	req := &OpRequest{Partition: 3, Op: OpSet, Key: "key-000123", Value: make([]byte, 64), TimeoutMS: 1000, VouchServer: "node-1/1f", VouchTerm: 7}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out OpRequest
			if err := decodeOne(encodeOpRequest(req), &out, decodeOpRequest); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, err := marshal(req)
			var out OpRequest
			if err == nil {
				err = Unmarshal(buf, &out)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkOpResponseCodec(b *testing.B) {
	resp := &opResponse{Value: make([]byte, 64), Version: 99, Applied: 1234}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out opResponse
			if err := decodeOne(encodeOpResponse(resp), &out, decodeOpResponse); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, err := marshal(resp)
			var out opResponse
			if err == nil {
				err = Unmarshal(buf, &out)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
