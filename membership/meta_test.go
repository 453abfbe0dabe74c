package membership

import (
	"bytes"
	"log/slog"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{ID: "n1", Addr: "127.0.0.1:7946", Incarnation: 42, ClusterID: "c", Leads: []int{0, 7, 8, 1023}},
		{ID: "n2"},
		{ID: "n3", Addr: "[::1]:1", Incarnation: ^uint64(0), Leads: []int{511}},
	} {
		b, err := encodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", m, err)
		}
		if got.ID != m.ID || got.Addr != m.Addr || got.Incarnation != m.Incarnation ||
			got.ClusterID != m.ClusterID || !slices.Equal(got.Leads, m.Leads) {
			t.Errorf("round trip %+v -> %+v", m, got)
		}
	}
}

func TestMetaWorstCaseFits(t *testing.T) {
	all := make([]int, MaxPartitions)
	for i := range all {
		all[i] = i
	}
	b, err := encodeMeta(Meta{ID: "node-with-a-reasonably-long-name", Addr: "[2001:db8::1234:5678]:65535",
		Incarnation: ^uint64(0), ClusterID: newClusterID(), Leads: all})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > memberlist.MetaMaxSize {
		t.Errorf("worst-case meta is %d bytes, over %d", len(b), memberlist.MetaMaxSize)
	}
	t.Logf("worst-case meta: %d bytes", len(b))
}

func TestNormalizeLeads(t *testing.T) {
	kept, dropped := normalizeLeads([]int{5, -1, 3, 5, MaxPartitions, 0})
	if !slices.Equal(kept, []int{0, 3, 5}) || !slices.Equal(dropped, []int{-1, MaxPartitions}) {
		t.Errorf("normalizeLeads = %v, %v", kept, dropped)
	}
	if kept, _ := normalizeLeads(nil); kept != nil {
		t.Errorf("normalizeLeads(nil) = %v, want nil", kept)
	}
}

func TestDecodeMetaRejectsGarbage(t *testing.T) {
	good, _ := encodeMeta(Meta{ID: "n", Leads: []int{1}})
	for name, b := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("not msgpack at all"),
		"truncated": good[:len(good)-2],
		"not array": {0x81, 0xa1, 'a', 0x01},
	} {
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	wrongVersion := bytes.Clone(good)
	wrongVersion[1] = 9 // array header, then the version
	if _, err := decodeMeta(wrongVersion); err == nil {
		t.Error("unknown version decoded without error")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := encodeMeta(Meta{ID: "n1", Addr: "127.0.0.1:1", Incarnation: 3, ClusterID: "c", Leads: []int{1, 900}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x96, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode again and mean the same.
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := decodeMeta(again)
		if err != nil || m2.ID != m.ID || !slices.Equal(m2.Leads, m.Leads) {
			t.Fatalf("re-decode %+v: %+v, %v", m, m2, err)
		}
		for _, p := range m.Leads {
			if p < 0 || p >= MaxPartitions {
				t.Fatalf("decoded lead %d out of range", p)
			}
		}
	})
}

func TestMemberlistLogLevels(t *testing.T) {
	h := newCaptureHandler()
	l := newMemberlistLogger(slog.New(h))
	l.Printf("[WARN] memberlist: something odd %d", 1)
	l.Printf("[ERR] memberlist: broken")
	l.Printf("[DEBUG] memberlist: chatter")
	l.Printf("[INFO] memberlist: news")
	l.Printf("untagged")
	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelWarn, "something odd 1"},
		{slog.LevelWarn, "broken"},
		{slog.LevelDebug, "chatter"},
		{slog.LevelDebug, "news"},
		{slog.LevelDebug, "untagged"},
	}
	got := h.find(func(logEntry) bool { return true })
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].level != w.level || got[i].msg != w.msg || got[i].attrs["component"] != "memberlist" {
			t.Errorf("record %d = %+v, want %v %q", i, got[i], w.level, w.msg)
		}
	}
}

func TestDelegatesRecoverAndRefuse(t *testing.T) {
	h := newCaptureHandler()
	m := &Membership{cfg: Config{NodeID: "me"}, clusterID: "c", logger: slog.New(h),
		members: map[string]*record{}, changed: make(chan struct{}, 1)}
	d := &delegates{m: m}
	// A nil node panics inside the callback; it must be recovered and refused.
	if err := d.NotifyAlive(nil); err == nil {
		t.Error("NotifyAlive(nil) accepted")
	}
	d.NotifyJoin(nil)
	if len(h.find(func(e logEntry) bool { return e.level == slog.LevelError })) < 2 {
		t.Error("recovered panics were not logged")
	}
	if err := d.NotifyAlive(&memberlist.Node{Name: "x", Meta: []byte("junk")}); err == nil {
		t.Error("NotifyAlive accepted unreadable metadata")
	}
	other, _ := encodeMeta(Meta{ID: "y", ClusterID: "c"})
	if err := d.NotifyAlive(&memberlist.Node{Name: "x", Meta: other}); err == nil {
		t.Error("NotifyAlive accepted metadata naming another node")
	}
	joiner, _ := encodeMeta(Meta{ID: "j"})
	if err := d.NotifyAlive(&memberlist.Node{Name: "j", Meta: joiner}); err != nil {
		t.Errorf("NotifyAlive refused a joiner without cluster ID: %v", err)
	}
	x1, _ := encodeMeta(Meta{ID: "p", ClusterID: "c1"})
	x2, _ := encodeMeta(Meta{ID: "q", ClusterID: "c2"})
	if err := d.NotifyMerge([]*memberlist.Node{{Name: "p", Meta: x1}, {Name: "q", Meta: x2}}); err == nil {
		t.Error("NotifyMerge accepted peers that disagree on their cluster")
	}
}
