package transport

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzRaftCodec feeds arbitrary bytes to a decoder chosen by the first byte.
// Whatever decodes must re-encode, in no more bytes (the encoder writes the
// shortest form of every field), to a message that decodes the same.
func FuzzRaftCodec(f *testing.F) {
	cases := raftCodecCases()
	for i, c := range cases {
		for _, m := range c.samples {
			if b := c.encode([]byte{byte(i)}, m); len(b) <= 4096 {
				f.Add(b)
			}
		}
	}
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		c := cases[int(data[0])%len(cases)]
		in := data[1:]
		first, err := c.decode(in)
		if err != nil {
			if !errors.Is(err, errMalformedFrame) {
				t.Fatalf("%s: error does not wrap errMalformedFrame: %v", c.name, err)
			}
			return
		}
		b := c.encode(nil, first)
		if len(b) > len(in) {
			t.Fatalf("%s: re-encoding grew %d bytes to %d", c.name, len(in), len(b))
		}
		second, err := c.decode(b)
		if err != nil {
			t.Fatalf("%s: re-encoding does not decode: %v", c.name, err)
		}
		if !reflect.DeepEqual(first, second) {
			t.Fatalf("%s: re-encoding changed the message:\n first %+v\nsecond %+v", c.name, first, second)
		}
	})
}
