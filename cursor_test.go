package gridkv

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, positions := range [][]uint64{
		{0},
		{1, 2, 3},
		{^uint64(0), 0, 1 << 40, 7<<16 | 0xFFFF},
		make([]uint64, MaxPartitions),
	} {
		c := newCursor(positions)
		parsed, err := ParseCursor(c.String())
		if err != nil || parsed != c {
			t.Fatalf("ParseCursor(%q) = %v, %v; want the same cursor", c, parsed, err)
		}
		got, err := parsed.positionsFor(len(positions))
		if err != nil || !slices.Equal(got, positions) {
			t.Fatalf("positions %v came back as %v, %v", positions, got, err)
		}
		if _, err := parsed.positionsFor(len(positions) + 1); !errors.Is(err, ErrInvalidCursor) {
			t.Fatalf("a cursor of %d partitions accepted for %d: %v", len(positions), len(positions)+1, err)
		}
	}
	if c, err := ParseCursor(""); err != nil || !c.IsZero() || c != (Cursor{}) {
		t.Fatalf("ParseCursor(\"\") = %v, %v; want the zero Cursor", c, err)
	}
}

func TestParseCursorRefusesGarbage(t *testing.T) {
	valid := newCursor([]uint64{5, 6}).String()
	for _, s := range []string{
		"x",
		"c1.",
		"c2." + strings.TrimPrefix(valid, "c1."),
		valid + "A",                       // trailing base64
		valid[:len(valid)-1],              // truncated
		"c1.AA",                           // zero partitions
		"c1." + strings.Repeat("_", 4000), // far too long
		"c1.gQA",                          // a non-canonical count (0x81 0x00)
		strings.Replace(valid, "c1.", "c1.=", 1),
	} {
		if c, err := ParseCursor(s); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("ParseCursor(%q) = %v, %v; want ErrInvalidCursor", s, c, err)
		}
	}
}

func FuzzParseCursor(f *testing.F) {
	f.Add(newCursor([]uint64{1, 2, 3}).String())
	f.Add("c1.AQE")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("ParseCursor(%q): %v does not wrap ErrInvalidCursor", s, err)
			}
			return
		}
		if c.String() != s {
			t.Fatalf("ParseCursor(%q).String() = %q", s, c)
		}
		again, err := ParseCursor(c.String())
		if err != nil || again != c {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
