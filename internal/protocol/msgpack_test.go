package protocol

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckAcceptsWhatMsgpackWrites(t *testing.T) {
	type inner struct {
		B []byte
		F float64
		M map[string]int
	}
	for _, v := range []any{
		nil, true, 1, -1, 1 << 40, -(1 << 40), 3.5, "short", string(make([]byte, 300)), make([]byte, 70000),
		[]int{1, 2, 3}, map[string]any{"a": 1, "b": []string{"x"}},
		inner{B: []byte("v"), F: 1.5, M: map[string]int{"k": 7}},
		make([]string, 20),
	} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(b); err != nil {
			t.Errorf("%T %v: %v", v, b[:min(len(b), 16)], err)
		}
		for cut := 0; cut < len(b); cut += max(1, len(b)/7) {
			if Check(b[:cut]) == nil {
				t.Errorf("%T: truncated to %d of %d bytes accepted", v, cut, len(b))
			}
		}
	}
}

func TestCheckRejectsOversizedDeclarations(t *testing.T) {
	for _, b := range [][]byte{
		{0xc6, 0xff, 0xff, 0xff, 0xff},                  // bin32 of 4 GiB
		{0xdb, 0xff, 0xff, 0xff, 0xff},                  // str32
		{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},            // ext32
		{0xdd, 0xff, 0xff, 0xff, 0xff},                  // array32
		{0xdf, 0x7f, 0xff, 0xff, 0xff},                  // map32
		{0x81, 0xa1, 'v', 0xc6, 0xff, 0xff, 0xff, 0xff}, // nested
		{0xc1}, // never used
	} {
		if err := Check(b); err == nil {
			t.Errorf("% x accepted", b)
		}
	}
}

func FuzzCheck(f *testing.F) {
	f.Add([]byte{0x81, 0xa1, 'v', 0xc4, 0x01, 0x00})
	f.Add([]byte{0x93, 0x01, 0x02, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		if Check(b) != nil {
			return
		}
		// What passes the check decodes without a declared length beyond the input.
		var v any
		_ = msgpack.Unmarshal(b, &v)
	})
}
