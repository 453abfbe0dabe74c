package store

import (
	"fmt"
	"slices"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Op is the kind of a Command. Its values are those of the Op enum in
// storepb/command.proto.
type Op uint8

// The operations a Command can carry. The zero Op is invalid.
//
// OpExpire, OpCompareAndDelete and Command.ExpiresAt are newer than the
// first release: a node that predates them rejects a batch holding either op
// as corrupt, and applies a write with ExpiresAt as permanent (it skips the
// unknown field, as protobuf requires). Replicas would then diverge, so
// every node of a cluster must run a version that knows them before any
// node proposes them.
const (
	// OpSet stores Value under Key, whatever the key held before.
	OpSet Op = iota + 1
	// OpDelete removes Key.
	OpDelete
	// OpCAS stores Value under Key only if the key's version is Version
	// (0: only if the key is absent).
	OpCAS
	// OpExpire removes Key only if its version is Version and it has a
	// deadline: the leader proposes it once the deadline passed by its
	// clock, and a key rewritten meanwhile (new version, or no deadline any
	// more) is left alone. Version must not be 0.
	OpExpire
	// OpCompareAndDelete removes Key only if its version is Version, which
	// must not be 0.
	OpCompareAndDelete
)

// String returns the op's name, or "Op(n)" for an unknown value.
func (o Op) String() string {
	switch o {
	case OpSet:
		return "Set"
	case OpDelete:
		return "Delete"
	case OpCAS:
		return "CAS"
	case OpExpire:
		return "Expire"
	case OpCompareAndDelete:
		return "CompareAndDelete"
	default:
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
}

// Command is one write. A batch of commands is the payload of one Raft log
// entry.
type Command struct {
	Op  Op
	Key string
	// Value is the new value of OpSet and OpCAS; the other ops ignore it.
	Value []byte
	// Version is the version OpCAS expects the key to have, 0 meaning the
	// key must be absent, and the version OpExpire and OpCompareAndDelete
	// expect (never 0); OpSet and OpDelete ignore it.
	Version uint64
	// ExpiresAt is, for OpSet and OpCAS, the deadline in unix nanoseconds
	// after which the key is gone: reads hide it from then on, and the
	// leader proposes an OpExpire for it. 0 means never, and a write
	// without a deadline makes a key that had one permanent again. The
	// other ops ignore it. Negative values are invalid.
	ExpiresAt int64
}

// Validate reports why c could not be applied: an unknown op, a key that is
// empty or longer than MaxKeySize, a value longer than MaxValueSize, a
// negative ExpiresAt, or an OpExpire or OpCompareAndDelete without a
// version. The error wraps ErrInvalidCommand. Callers proposing commands
// should validate them first: DecodeBatch rejects a whole batch that holds
// an invalid one.
func (c Command) Validate() error {
	if problem := c.problem(); problem != "" {
		return fmt.Errorf("%w: %s", ErrInvalidCommand, problem)
	}
	return nil
}

// problem describes what makes c invalid, or returns "" if nothing does.
// Validate and the decoder share it so they can never disagree.
func (c *Command) problem() string {
	switch {
	case c.Op < OpSet || c.Op > OpCompareAndDelete:
		return fmt.Sprintf("unknown op %d", uint8(c.Op))
	case len(c.Key) == 0:
		return "empty key"
	case len(c.Key) > MaxKeySize:
		return fmt.Sprintf("key of %d bytes exceeds %d", len(c.Key), MaxKeySize)
	case len(c.Value) > MaxValueSize:
		return fmt.Sprintf("value of %d bytes exceeds %d", len(c.Value), MaxValueSize)
	case c.ExpiresAt < 0:
		return fmt.Sprintf("negative ExpiresAt %d", c.ExpiresAt)
	case (c.Op == OpExpire || c.Op == OpCompareAndDelete) && c.Version == 0:
		return fmt.Sprintf("%v without a version", c.Op)
	}
	return ""
}

// Version returns the version of command pos (0-based) of the batch
// committed at log index index: index<<16 | (pos+1). Because Raft indexes
// grow and a batch holds at most MaxBatch commands, versions are unique and
// strictly increasing in apply order within a partition, and never 0. A pos
// outside 0..MaxBatch-1 is reduced modulo 2^16 so it never spills into the
// index bits.
func Version(index uint64, pos int) uint64 {
	return index<<16 | uint64(pos+1)&0xFFFF
}

// Protobuf tags of storepb.Batch and storepb.Command, precomputed as
// field<<3 | wire type (all fit in one byte).
const (
	tagBatchCommand   = 1<<3 | byte(protowire.BytesType)
	tagCommandOp      = 1<<3 | byte(protowire.VarintType)
	tagCommandKey     = 2<<3 | byte(protowire.BytesType)
	tagCommandValue   = 3<<3 | byte(protowire.BytesType)
	tagCommandVersion = 4<<3 | byte(protowire.VarintType)
	tagCommandExpires = 5<<3 | byte(protowire.VarintType)
)

// commandSize returns the encoded size of c as a storepb.Command. Like the
// generated code, it leaves out fields holding their zero value.
func commandSize(c *Command) int {
	n := 0
	if c.Op != 0 {
		n += 1 + protowire.SizeVarint(uint64(c.Op))
	}
	if len(c.Key) > 0 {
		n += 1 + protowire.SizeBytes(len(c.Key))
	}
	if len(c.Value) > 0 {
		n += 1 + protowire.SizeBytes(len(c.Value))
	}
	if c.Version != 0 {
		n += 1 + protowire.SizeVarint(c.Version)
	}
	if c.ExpiresAt != 0 {
		n += 1 + protowire.SizeVarint(uint64(c.ExpiresAt))
	}
	return n
}

// AppendBatch appends cmds, encoded as a storepb.Batch, to dst and returns
// the extended slice. The bytes are those proto.Marshal produces for the
// same message. It does not validate: use Command.Validate before
// proposing, or the receiving DecodeBatch rejects the whole batch.
func AppendBatch(dst []byte, cmds []Command) []byte {
	total := 0
	for i := range cmds {
		n := commandSize(&cmds[i])
		total += 1 + protowire.SizeVarint(uint64(n)) + n
	}
	dst = slices.Grow(dst, total)
	for i := range cmds {
		c := &cmds[i]
		dst = append(dst, tagBatchCommand)
		dst = protowire.AppendVarint(dst, uint64(commandSize(c)))
		if c.Op != 0 {
			dst = append(dst, tagCommandOp)
			dst = protowire.AppendVarint(dst, uint64(c.Op))
		}
		if len(c.Key) > 0 {
			dst = append(dst, tagCommandKey)
			dst = protowire.AppendString(dst, c.Key)
		}
		if len(c.Value) > 0 {
			dst = append(dst, tagCommandValue)
			dst = protowire.AppendBytes(dst, c.Value)
		}
		if c.Version != 0 {
			dst = append(dst, tagCommandVersion)
			dst = protowire.AppendVarint(dst, c.Version)
		}
		if c.ExpiresAt != 0 {
			// int64 is a varint of the two's complement, as protobuf says.
			dst = append(dst, tagCommandExpires)
			dst = protowire.AppendVarint(dst, uint64(c.ExpiresAt))
		}
	}
	return dst
}

// DecodeBatch decodes a storepb.Batch and validates every command in it
// (see Command.Validate) and the count (at most MaxBatch). Any failure
// wraps ErrCorrupt and nothing is returned: a batch applies whole or not
// at all. Unknown fields are skipped, as protobuf requires, so that newer
// writers stay readable; a known field with the wrong wire type is an
// error.
//
// The Value of each returned command aliases data (capacity trimmed, so an
// append cannot overwrite data): copy it to keep it past data's lifetime.
// ApplyBatch copies values in, so decoding a log entry and applying it
// costs one allocation per key and none per value.
func DecodeBatch(data []byte) ([]Command, error) { return decodeBatch(nil, data, false) }

// decodeBatch is DecodeBatch, appending to dst[:0] when it has room for
// every command; with aliasKeys, each command's Key shares data's bytes
// instead of being copied, for callers that neither retain the keys nor let
// data change while they use them.
func decodeBatch(dst []Command, data []byte, aliasKeys bool) ([]Command, error) {
	// First pass: check the framing and count, so the result is allocated
	// once, at its exact size, and a huge count is refused before any
	// allocation.
	count := 0
	for b := data; len(b) > 0; {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return nil, corruptf("batch: %v", err)
		}
		b = b[n:]
		if num == 1 && typ != protowire.BytesType {
			return nil, corruptf("batch: commands field has wire type %d", typ)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, corruptf("batch: field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 {
			if count++; count > MaxBatch {
				return nil, corruptf("batch: more than %d commands", MaxBatch)
			}
		}
	}
	if count == 0 {
		return nil, nil
	}

	// Second pass: the framing is known good, so only the commands'
	// contents can fail.
	cmds := dst[:0]
	if cap(cmds) < count {
		cmds = make([]Command, 0, count)
	}
	for b := data; len(b) > 0; {
		num, typ, n, _ := consumeTag(b)
		b = b[n:]
		if num != 1 {
			b = b[protowire.ConsumeFieldValue(num, typ, b):]
			continue
		}
		msg, n := protowire.ConsumeBytes(b)
		b = b[n:]
		c, err := decodeCommand(msg, aliasKeys)
		if err != nil {
			return nil, fmt.Errorf("command %d: %w", len(cmds), err)
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// decodeCommand decodes and validates one storepb.Command. With aliasKeys
// the key shares b's bytes.
func decodeCommand(b []byte, aliasKeys bool) (Command, error) {
	var (
		op         uint64
		key, value []byte
		c          Command
	)
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return c, corruptf("%v", err)
		}
		b = b[n:]
		want := protowire.Type(-1) // known fields check their wire type
		switch num {
		case 1:
			want = protowire.VarintType
			op, n = protowire.ConsumeVarint(b)
		case 2:
			want = protowire.BytesType
			key, n = protowire.ConsumeBytes(b)
		case 3:
			want = protowire.BytesType
			value, n = protowire.ConsumeBytes(b)
		case 4:
			want = protowire.VarintType
			c.Version, n = protowire.ConsumeVarint(b)
		case 5:
			want = protowire.VarintType
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			c.ExpiresAt = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if want >= 0 && typ != want {
			return c, corruptf("field %d has wire type %d, want %d", num, typ, want)
		}
		if n < 0 {
			return c, corruptf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	// Check op as the full varint: converting first would let 257 pass
	// as OpSet. The other checks need no allocation, so they run before
	// the key is copied.
	if op < uint64(OpSet) || op > uint64(OpCompareAndDelete) {
		return c, corruptf("unknown op %d", op)
	}
	c.Op = Op(op)
	c.Key = unsafe.String(unsafe.SliceData(key), len(key))
	if value != nil {
		c.Value = value[:len(value):len(value)]
	}
	if problem := c.problem(); problem != "" {
		return Command{}, corruptf("%s", problem)
	}
	if !aliasKeys {
		c.Key = string(key)
	}
	return c, nil
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// consumeTag is protowire.ConsumeTag with the error as an error value, also
// rejecting field numbers above protowire.MaxValidNumber as the generated
// code does (ConsumeTag alone only rejects 0).
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, protowire.ParseError(n)
	}
	if !num.IsValid() {
		return 0, 0, 0, fmt.Errorf("field number %d out of range", num)
	}
	return num, typ, n, nil
}
