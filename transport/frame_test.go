package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	in := envelope{Kind: 200, Status: statusError, TimeoutNanos: 123456789, Body: []byte("payload"), Err: "oops"}
	var buf bytes.Buffer
	if err := writeFrame(&buf, &in, 1<<20); err != nil {
		t.Fatal(err)
	}
	var out envelope
	if err := readFrame(&buf, 1<<20, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Kind != in.Kind || out.Status != in.Status || out.TimeoutNanos != in.TimeoutNanos ||
		!bytes.Equal(out.Body, in.Body) || out.Err != in.Err {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	if err := writeFrame(&buf, &envelope{Body: make([]byte, 100)}, 50); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("oversized write wrote %d bytes", buf.Len())
	}
}

func TestReadFrameErrors(t *testing.T) {
	var env envelope
	if err := readFrame(bytes.NewReader(nil), 1024, nil, &env); err != io.EOF {
		t.Errorf("empty input: %v, want EOF", err)
	}
	if err := readFrame(bytes.NewReader([]byte{0, 0}), 1024, nil, &env); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated header: %v", err)
	}
	if err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1}), 1024, nil, &env); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated body: %v", err)
	}
	if err := readFrame(bytes.NewReader([]byte{0, 0, 0, 0}), 1024, nil, &env); !isProtocolError(err) {
		t.Errorf("empty frame: %v", err)
	}
	// A body claiming more bytes than the frame holds.
	bad := []byte{0x95, 0, 0, 0, 0xc6, 0xff, 0xff, 0xff, 0xff, 0xa0}
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(bad)))
	if err := readFrame(bytes.NewReader(append(frame, bad...)), 1024, nil, &env); !isProtocolError(err) {
		t.Errorf("lying body length: %v", err)
	}
	// A kind that does not fit a byte.
	bad = []byte{0x95, 0xcd, 0x01, 0x2c, 0, 0, 0xc4, 0, 0xa0}
	frame = binary.BigEndian.AppendUint32(nil, uint32(len(bad)))
	if err := readFrame(bytes.NewReader(append(frame, bad...)), 1024, nil, &env); !isProtocolError(err) {
		t.Errorf("kind 300: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	var valid bytes.Buffer
	_ = writeFrame(&valid, &envelope{Kind: 1, TimeoutNanos: 5, Body: []byte("hello"), Err: "e"}, 1<<20)
	f.Add(valid.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 0x93, 1, 2})
	f.Add([]byte{0, 0, 0, 10, 0x95, 0, 0, 0, 0xc6, 0xff, 0xff, 0xff, 0xff, 0xa0})
	f.Add(append([]byte{0, 0, 0, 8}, bytes.Repeat([]byte{0x91}, 8)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var env envelope
		err := readFrame(bytes.NewReader(data), 4096, nil, &env)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same envelope.
		var buf bytes.Buffer
		if err := writeFrame(&buf, &env, 1<<20); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again envelope
		if err := readFrame(&buf, 1<<20, nil, &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Kind != env.Kind || again.Status != env.Status || again.TimeoutNanos != env.TimeoutNanos ||
			!bytes.Equal(again.Body, env.Body) || again.Err != env.Err {
			t.Fatalf("unstable: %+v vs %+v", env, again)
		}
	})
}
