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
const (
	// OpSet stores Value under Key, whatever the key held before.
	OpSet Op = iota + 1
	// OpDelete removes Key.
	OpDelete
	// OpCAS stores Value under Key only if the key's version is Version
	// (0: only if the key is absent).
	OpCAS
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
	default:
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
}

// Command is one write. A batch of commands is the payload of one Raft log
// entry.
type Command struct {
	Op  Op
	Key string
	// Value is the new value of OpSet and OpCAS; OpDelete ignores it.
	Value []byte
	// Version is the version OpCAS expects the key to have, 0 meaning the
	// key must be absent; the other ops ignore it.
	Version uint64
}

// Validate reports why c could not be applied: an unknown op, a key that is
// empty or longer than MaxKeySize, or a value longer than MaxValueSize. The
// error wraps ErrInvalidCommand. Callers proposing commands should validate
// them first: DecodeBatch rejects a whole batch that holds an invalid one.
func (c Command) Validate() error {
	switch {
	case c.Op < OpSet || c.Op > OpCAS:
		return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, uint8(c.Op))
	case len(c.Key) == 0:
		return fmt.Errorf("%w: empty key", ErrInvalidCommand)
	case len(c.Key) > MaxKeySize:
		return fmt.Errorf("%w: key of %d bytes exceeds %d", ErrInvalidCommand, len(c.Key), MaxKeySize)
	case len(c.Value) > MaxValueSize:
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrInvalidCommand, len(c.Value), MaxValueSize)
	}
	return nil
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
func DecodeBatch(data []byte) ([]Command, error) { return decodeBatch(data, false) }

// decodeBatch is DecodeBatch; with aliasKeys, each command's Key shares
// data's bytes instead of being copied, for callers that neither retain the
// keys nor let data change while they use them.
func decodeBatch(data []byte, aliasKeys bool) ([]Command, error) {
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
	cmds := make([]Command, 0, count)
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
	// as OpSet.
	if op < uint64(OpSet) || op > uint64(OpCAS) {
		return c, corruptf("unknown op %d", op)
	}
	if len(key) == 0 || len(key) > MaxKeySize {
		return c, corruptf("key of %d bytes, want 1..%d", len(key), MaxKeySize)
	}
	if len(value) > MaxValueSize {
		return c, corruptf("value of %d bytes exceeds %d", len(value), MaxValueSize)
	}
	c.Op = Op(op)
	if aliasKeys {
		c.Key = unsafe.String(unsafe.SliceData(key), len(key))
	} else {
		c.Key = string(key)
	}
	if value != nil {
		c.Value = value[:len(value):len(value)]
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
