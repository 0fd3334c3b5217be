//! The README's main job: `switch demo` pings both ways through the eBPF switch, prints the
//! MAC table, and leaves nothing behind.
use switch_tests::*;

#[test]
fn demo_pings_both_ways_and_cleans_up() {
    let r = switch(&["demo"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches(" 0% packet loss").count(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("MAC") && r.stdout.contains("dynamic"), "{}", r.stdout);
    let fdb_lines = r.stdout.lines().filter(|l| l.contains(" dynamic ")).count();
    assert_eq!(fdb_lines, 2, "{}", r.stdout);
    assert!(!netns_list().iter().any(|n| n == "red" || n == "blue"));
    assert!(!std::path::Path::new("/sys/fs/bpf/switch/demo").exists());
}
