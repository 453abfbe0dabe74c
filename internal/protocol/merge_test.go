package protocol

import (
	"slices"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

func page(more bool, keys ...string) ListResult {
	r := ListResult{More: more}
	for _, k := range keys {
		r.Entries = append(r.Entries, store.Entry{Key: k})
	}
	return r
}

func keysOf(entries []store.Entry) []string {
	var ks []string
	for _, e := range entries {
		ks = append(ks, e.Key)
	}
	return ks
}

// The partitions' pages merge in key order; a partition with more than it returned bounds
// the page, since its next keys could sort before another partition's.
func TestMergePages(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pages    []ListResult
		limit    int
		want     []string
		wantMore bool
	}{
		{"all fit", []ListResult{page(false, "a", "d"), page(false, "b"), page(false)}, 10, []string{"a", "b", "d"}, false},
		{"cut by the limit", []ListResult{page(false, "a", "d"), page(false, "b", "c")}, 3, []string{"a", "b", "c"}, true},
		{"a partition with more bounds the merge", []ListResult{page(true, "a", "b"), page(false, "c", "d")}, 10, []string{"a", "b"}, true},
		{"the lowest bound wins", []ListResult{page(true, "a", "m"), page(true, "b", "c"), page(false, "d")}, 10, []string{"a", "b", "c"}, true},
		{"nothing at all", []ListResult{page(false), page(false)}, 10, nil, false},
	} {
		got, more := MergePages(tc.pages, tc.limit)
		if !slices.Equal(keysOf(got), tc.want) || more != tc.wantMore {
			t.Errorf("%s: %v more=%v; want %v more=%v", tc.name, keysOf(got), more, tc.want, tc.wantMore)
		}
	}
}
