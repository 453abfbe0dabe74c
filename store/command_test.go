package store_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/store/storepb"
)

func sampleCommands() []store.Command {
	return []store.Command{
		{Op: store.OpSet, Key: "k", Value: []byte("value")},
		{Op: store.OpSet, Key: "empty-value"},
		{Op: store.OpDelete, Key: "gone"},
		{Op: store.OpCAS, Key: "c", Value: []byte{0, 1, 2}, Version: 1 << 40},
		{Op: store.OpCAS, Key: "\xff\x00not utf-8", Value: bytes.Repeat([]byte("x"), 300)},
		{Op: store.OpSet, Key: string(make([]byte, store.MaxKeySize)), Value: make([]byte, 200_000)},
		{Op: store.OpSet, Key: "ttl", Value: []byte("v"), ExpiresAt: 1_700_000_000_000_000_000},
		{Op: store.OpCAS, Key: "ttl-cas", Value: []byte("v"), Version: 7, ExpiresAt: 1},
		{Op: store.OpExpire, Key: "ttl", Version: store.Version(3, 0)},
		{Op: store.OpCompareAndDelete, Key: "cad", Version: 1 << 50},
		{Op: store.OpSet, Key: "max-deadline", ExpiresAt: 1<<63 - 1},
	}
}

func toProto(cmds []store.Command) *storepb.Batch {
	b := &storepb.Batch{}
	for _, c := range cmds {
		b.Commands = append(b.Commands, &storepb.Command{
			Op: storepb.Op(c.Op), Key: []byte(c.Key), Value: c.Value, Version: c.Version, ExpiresAt: c.ExpiresAt,
		})
	}
	return b
}

// normalize maps nil and empty values to nil, the only difference protobuf
// cannot preserve.
func normalize(cmds []store.Command) []store.Command {
	out := make([]store.Command, len(cmds))
	for i, c := range cmds {
		if len(c.Value) == 0 {
			c.Value = nil
		}
		out[i] = c
	}
	return out
}

// The hand encoder writes exactly what the generated code writes.
func TestAppendBatchMatchesGenerated(t *testing.T) {
	cmds := sampleCommands()
	got := store.AppendBatch([]byte("prefix"), cmds)
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatal("AppendBatch dropped dst")
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(toProto(cmds))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("AppendBatch differs from proto.Marshal:\n got %x\nwant %x", got[6:min(len(got), 80)], want[:min(len(want), 74)])
	}
	if len(store.AppendBatch(nil, nil)) != 0 {
		t.Fatal("empty batch encodes to bytes")
	}
}

// The hand decoder reads what the generated code writes, and the
// generated code reads what the hand encoder writes.
func TestDecodeBatchRoundTrip(t *testing.T) {
	cmds := sampleCommands()
	data, err := proto.Marshal(toProto(cmds))
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(got), normalize(cmds)) {
		t.Fatalf("decoded %+v", got)
	}
	for _, c := range got {
		if cap(c.Value) != len(c.Value) {
			t.Fatal("decoded value's capacity reaches into the entry")
		}
	}

	var pb storepb.Batch
	if err := proto.Unmarshal(store.AppendBatch(nil, cmds), &pb); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&pb, toProto(cmds)) {
		t.Fatal("generated code decodes AppendBatch output differently")
	}
}

func TestDecodeBatchSkipsUnknownFields(t *testing.T) {
	cmd := protowire.AppendTag(nil, 9, protowire.BytesType) // unknown, before known fields
	cmd = protowire.AppendString(cmd, "future")
	cmd = protowire.AppendTag(cmd, 1, protowire.VarintType)
	cmd = protowire.AppendVarint(cmd, uint64(store.OpSet))
	cmd = protowire.AppendTag(cmd, 2, protowire.BytesType)
	cmd = protowire.AppendString(cmd, "k")
	cmd = protowire.AppendTag(cmd, 20, protowire.Fixed64Type)
	cmd = protowire.AppendFixed64(cmd, 7)
	batch := protowire.AppendTag(nil, 5, protowire.VarintType) // unknown batch field
	batch = protowire.AppendVarint(batch, 1)
	batch = protowire.AppendTag(batch, 1, protowire.BytesType)
	batch = protowire.AppendBytes(batch, cmd)
	got, err := store.DecodeBatch(batch)
	if err != nil || len(got) != 1 || got[0].Op != store.OpSet || got[0].Key != "k" {
		t.Fatalf("DecodeBatch = %+v, %v", got, err)
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	encodeOne := func(c *storepb.Command) []byte {
		b, err := proto.Marshal(&storepb.Batch{Commands: []*storepb.Command{c}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tooMany := bytes.Repeat(encodeOne(&storepb.Command{Op: storepb.Op_OP_DELETE, Key: []byte("k")}), store.MaxBatch+1)
	valid := store.AppendBatch(nil, sampleCommands()[:2])
	cases := map[string][]byte{
		"op 0":               encodeOne(&storepb.Command{Key: []byte("k")}),
		"op 6":               encodeOne(&storepb.Command{Op: 6, Key: []byte("k"), Version: 1}),
		"expire, no version": encodeOne(&storepb.Command{Op: storepb.Op_OP_EXPIRE, Key: []byte("k")}),
		"CAD, no version":    encodeOne(&storepb.Command{Op: storepb.Op_OP_COMPARE_AND_DELETE, Key: []byte("k")}),
		"negative deadline":  encodeOne(&storepb.Command{Op: storepb.Op_OP_SET, Key: []byte("k"), ExpiresAt: -1}),
		"deadline as bytes":  {0x0a, 0x07, 0x08, 0x01, 0x12, 0x01, 'k', 0x2a, 0x00},
		"op 257":             encodeOne(&storepb.Command{Op: 257, Key: []byte("k")}),
		"empty key":          encodeOne(&storepb.Command{Op: storepb.Op_OP_SET}),
		"key too long":       encodeOne(&storepb.Command{Op: storepb.Op_OP_SET, Key: make([]byte, store.MaxKeySize+1)}),
		"value too long":     encodeOne(&storepb.Command{Op: storepb.Op_OP_SET, Key: []byte("k"), Value: make([]byte, store.MaxValueSize+1)}),
		"too many":           tooMany,
		"truncated":          valid[:len(valid)-1],
		"commands varint":    {0x08, 0x01},
		"op as bytes":        {0x0a, 0x05, 0x0a, 0x01, 0x01, 0x12, 0x00},
		"field number 0":     {0x00, 0x01},
		"bad varint":         bytes.Repeat([]byte{0xff}, 11),
		"huge length":        {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, data := range cases {
		if got, err := store.DecodeBatch(data); !errors.Is(err, store.ErrCorrupt) || got != nil {
			t.Errorf("%s: DecodeBatch = %d commands, %v; want ErrCorrupt", name, len(got), err)
		}
	}
	// MaxBatch itself is fine.
	if got, err := store.DecodeBatch(tooMany[:len(tooMany)/(store.MaxBatch+1)*store.MaxBatch]); err != nil || len(got) != store.MaxBatch {
		t.Fatalf("MaxBatch commands: %d, %v", len(got), err)
	}
}

func TestCommandValidate(t *testing.T) {
	for _, c := range []store.Command{
		{Op: store.OpCAS, Key: "k"},
		{Op: store.OpSet, Key: "k", ExpiresAt: 1},
		{Op: store.OpExpire, Key: "k", Version: 1},
		{Op: store.OpCompareAndDelete, Key: "k", Version: 1},
		{Op: store.OpDelete, Key: "k", ExpiresAt: 5}, // ignored
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	for _, c := range []store.Command{
		{Op: 0, Key: "k"},
		{Op: store.OpCompareAndDelete + 1, Key: "k", Version: 1},
		{Op: store.OpExpire, Key: "k"},
		{Op: store.OpCompareAndDelete, Key: "k"},
		{Op: store.OpSet, Key: "k", ExpiresAt: -1},
		{Op: store.OpCAS, Key: "k", ExpiresAt: -1 << 63},
		{Op: store.OpSet},
		{Op: store.OpSet, Key: string(make([]byte, store.MaxKeySize+1))},
		{Op: store.OpSet, Key: "k", Value: make([]byte, store.MaxValueSize+1)},
	} {
		if err := c.Validate(); !errors.Is(err, store.ErrInvalidCommand) {
			t.Errorf("Validate(%v, key %d bytes, value %d bytes, version %d, deadline %d) = %v",
				c.Op, len(c.Key), len(c.Value), c.Version, c.ExpiresAt, err)
		}
	}
}

// ExpiresAt is field 5, a varint, as the schema says. A node that predates
// it skips the field like any unknown one (TestDecodeBatchSkipsUnknownFields)
// and keeps the key forever, which is why TTL needs every node upgraded.
func TestDeadlineIsFieldFive(t *testing.T) {
	data := store.AppendBatch(nil, []store.Command{{Op: store.OpSet, Key: "k", ExpiresAt: 300}})
	want := []byte{0x0a, 0x08, 0x08, 0x01, 0x12, 0x01, 'k', 0x28, 0xac, 0x02}
	if !bytes.Equal(data, want) {
		t.Fatalf("encoded %x, want %x", data, want)
	}
	var pb storepb.Batch
	if err := proto.Unmarshal(data, &pb); err != nil || pb.Commands[0].ExpiresAt != 300 {
		t.Fatalf("generated code reads %v, %v", &pb, err)
	}
}
