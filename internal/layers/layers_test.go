package layers

import (
	"bufio"
	"fmt"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// order lists the module's packages from the top to the bottom, by path
// inside the module ("." is the root package, github.com/mwpeer/mwpeer). A
// package may import only packages strictly below it. A package missing from
// the list fails the test: when you add one, put it here where it belongs.
// Packages listed that do not exist yet are fine.
var order = []string{
	"cmd/mwpeer",
	"internal/cli",
	"internal/scale", // a model of the swarm at scale: reads the defaults, starts nothing
	".",
	"api",
	"swarm",
	"ledger",
	"consent",
	"inference/sharding",
	"inference/moe",
	"inference/expert",
	"inference/infer",
	"inference/llama",
	"inference",
	"routing",
	"experts/shard/transfer",
	"experts/shard",
	"experts",
	"experts/catchup",
	"inference/tally",
	"receipt",
	"trust",
	"membership",
	"p2p",
	"geo",
	// Leaf utilities: anything above may import them; they import none of
	// ours.
	"internal/lifecycle",
	"internal/wire",
	"inference/llama/randmodel",
}

// testSupport are packages for tests: they may import anything of ours, and
// only test files may import them.
var testSupport = []string{
	"internal/p2ptest",
	"internal/ollamatest",
	"internal/nattest",
	"internal/wait",
	"internal/browsertest",
	"internal/layers",
	"internal/worldtest",
	"internal/fuzzcorpus",
	"internal/leaktest",
}

// forbidden says which packages must not import a tree of import paths
// (the path itself and everything under it), and why.
var forbidden = []struct {
	pkg, tree, why string
}{
	{"routing", "github.com/libp2p", "routing scores a snapshot and knows nothing of libp2p"},
	{"geo", "github.com/libp2p", "geo is geometry and knows nothing of libp2p"},
	{"p2p", "net/http", "p2p is the libp2p host and speaks no HTTP"},
}

// pkg is a package of the module as seen from its non-test files.
type pkg struct {
	imports map[string][]string // import path -> files importing it
}

func TestImportsGoDown(t *testing.T) {
	module, pkgs := scan(t)
	rank := make(map[string]int, len(order))
	for i, p := range order {
		if _, dup := rank[p]; dup {
			t.Fatalf("%s is listed twice in order", p)
		}
		rank[p] = i
	}
	ours := func(imp string) (string, bool) {
		if imp == module {
			return ".", true
		}
		rel, ok := strings.CutPrefix(imp, module+"/")
		return rel, ok
	}
	for _, name := range sortedKeys(pkgs) {
		if slices.Contains(testSupport, name) {
			continue
		}
		r, listed := rank[name]
		if !listed {
			t.Errorf("package %s is not in the layer order: add it to order in internal/layers/layers_test.go where it belongs", name)
			continue
		}
		for _, imp := range sortedKeys(pkgs[name].imports) {
			files := strings.Join(pkgs[name].imports[imp], ", ")
			dep, ok := ours(imp)
			if !ok {
				continue
			}
			if slices.Contains(testSupport, dep) {
				t.Errorf("%s imports the test-support package %s in non-test code (%s)", name, dep, files)
				continue
			}
			d, listed := rank[dep]
			switch {
			case !listed:
				t.Errorf("%s imports %s, which is not in the layer order (%s)", name, dep, files)
			case d <= r:
				t.Errorf("%s imports %s, which is not below it in the layer order (%s)", name, dep, files)
			}
		}
	}
}

func TestForbiddenImports(t *testing.T) {
	_, pkgs := scan(t)
	for _, f := range forbidden {
		p, ok := pkgs[f.pkg]
		if !ok {
			t.Errorf("package %s not found", f.pkg)
			continue
		}
		for _, imp := range sortedKeys(p.imports) {
			if imp == f.tree || strings.HasPrefix(imp, f.tree+"/") {
				t.Errorf("%s imports %s (%s): %s", f.pkg, imp, strings.Join(p.imports[imp], ", "), f.why)
			}
		}
	}
}

// scan parses the import lines of every non-test Go file of the module and
// returns the module path and its packages by path inside the module.
func scan(t *testing.T) (string, map[string]*pkg) {
	t.Helper()
	root, module := moduleRoot(t)
	pkgs := make(map[string]*pkg)
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); p != root && err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		for _, cg := range f.Comments {
			if cg.Pos() > f.Package {
				break
			}
			for _, c := range cg.List {
				if expr, err := constraint.Parse(c.Text); err == nil && !expr.Eval(func(tag string) bool { return tag != "ignore" }) {
					return nil // //go:build ignore and the like: not part of the package
				}
			}
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		pk := pkgs[rel]
		if pk == nil {
			pk = &pkg{imports: make(map[string][]string)}
			pkgs[rel] = pk
		}
		for _, is := range f.Imports {
			imp, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			pk.imports[imp] = append(pk.imports[imp], path.Join(rel, name))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Fatalf("no packages found under %s", root)
	}
	return module, pkgs
}

// moduleRoot finds the go.mod above the working directory and returns its
// directory and module path.
func moduleRoot(t *testing.T) (dir, module string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		f, err := os.Open(filepath.Join(dir, "go.mod"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(m), `"`)
				}
			}
			t.Fatalf("%s/go.mod names no module", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
