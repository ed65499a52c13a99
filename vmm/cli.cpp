#include "vmm/cli.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string_view>

#include "devices/vfio/group.hpp"
#include "vmm/exit_status.hpp"
#include "vmm/sandbox/protocol.hpp"

namespace vmm::cli {
namespace {

// The `run` subcommand's flags, one line each (kvmtool's spelling where kvmtool has the flag).
struct RunOptions {
    VmConfig config;
    std::vector<std::string> disk_specs;
    std::vector<std::string> share_specs;
    std::string rootfs;
    std::string params;
    std::string mem = "256";
    std::string console = "serial";
    CLI::Option* params_option = nullptr;
    std::string viommu;
    CLI::Option* viommu_option = nullptr;
    std::vector<std::string> network_specs;
    CLI::Option* network_option = nullptr;
};

// Digits only: CLI11 would otherwise wrap "-5" into a huge unsigned value.
CLI::Validator whole_number() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
            bool digits = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
            return digits ? std::string() : "'" + value + "' is not a whole number";
        },
        "");
}

void add_run_options(CLI::App& run, RunOptions& o) {
    VmConfig& c = o.config;
    run.add_option("-k,--kernel", c.kernel,
                   "arm64 Linux Image to boot (default on an arm64 host: /boot/vmlinuz-$(uname -r) with "
                   "/boot/initrd.img-$(uname -r), unless -i)")
        ->type_name("IMAGE");
    run.add_option("-i,--initrd", c.initrd, "initial ramdisk")->type_name("FILE");
    o.params_option = run.add_option("-p,--params", o.params,
                                     "added to the kernel command line lkvm builds (console, root; see below)")
                          ->type_name("CMDLINE");
    run.add_flag("--nodefaults", c.nodefaults, "boot with -p alone as the kernel command line");
    run.add_option("-c,--cpus", c.cpus, "number of vCPUs")
        ->type_name("N")
        ->capture_default_str()
        ->check(whole_number());
    run.add_option("-m,--mem", o.mem, "guest RAM: MiB, or with a K/M/G/T suffix (-m 1G)")
        ->type_name("SIZE")
        ->capture_default_str();
    run.add_option("-d,--disk", o.disk_specs, "virtio-blk disk image; ',ro' attaches it read-only (repeatable)")
        ->type_name("FILE[,ro]")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--9p", o.share_specs,
                   "share host directory DIR with the guest over virtio-9p (mount -t 9p -o trans=virtio TAG /mnt); "
                   "TAG defaults to kvm_9p; ',ro' refuses writes; ',suid' lets the guest make set-user-ID files (see "
                   "README) (repeatable)")
        ->type_name("DIR[,TAG][,ro][,suid]")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--rootfs", o.rootfs,
                   "boot with host directory DIR as the root file system over virtio-9p (tag /dev/root)")
        ->type_name("DIR");
    run.add_option("--console", o.console,
                   "where the guest console and stdin go: the UART (ttyS0) or virtio-console (hvc0)")
        ->type_name("serial|virtio");
    run.add_flag("--rng", c.rng, "add a virtio-rng device");
    run.add_flag("--pmu", c.cpu.pmu, "give the vCPUs a PMUv3 (perf counters; needs the host's KVM_CAP_ARM_PMU_V3)");
    run.add_option("--sve-max-vl", c.cpu.sve_max_vl,
                   "longest SVE vector length of the vCPUs, in bits (default: the host's longest)")
        ->type_name("BITS")
        ->check(whole_number());
    run.add_option("--vfio-pci", c.vfio_pci,
                   "assign host PCI function BDF (bound to vfio-pci) to the guest; repeatable")
        ->type_name("BDF")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    o.viommu_option =
        run.add_option("--viommu", o.viommu,
                       "put devices behind a virtio-iommu (guest-controlled DMA translation); "
                       "alone: all devices, page_size=4K,bypass=1,input_bits=48")
            ->type_name(
                "[virtio|vfio|all][,page_size=4K|64K|MASK][,bypass=0|1][,input_range=S-E|input_bits=N][,poll=US]"
                "[,tables=on|off]")
            ->expected(0, 1);
    o.network_option =
        run.add_option("-n,--network", o.network_specs,
                       "a virtio-net NIC (repeatable; without -n: one mode=user NIC); mode=user (libslirp, DHCP, DNS, "
                       "no root), tap (tapif=NAME, fd=N an open tap, or a new tap as root) or none (no NIC)")
            ->type_name(
                "[mode=user|tap|none][,tapif=NAME|fd=N][,guest_mac=MAC][,host_ip=IP][,guest_ip=IP][,hostfwd=tcp:HP-GP]"
                "[,host_loopback=on|off][,restrict=on|off]")
            ->expected(0, 1)
            ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--name", c.name, "guest name (default: guest-<pid>)")->type_name("NAME");
    run.add_option("--dump-dtb", c.dump_dtb, "write the generated device tree to FILE and exit")->type_name("FILE");
    run.add_flag("--debug", c.debug, "log debug messages (memory map, devices, boot timings) to stderr");
    run.add_flag("--no-reboot", c.no_reboot, "exit when the guest reboots instead of rebooting it");
}

// "FILE" or "FILE,ro". Returns an error text, or empty.
std::string parse_disk(const std::string& spec, DiskConfig& disk) {
    std::size_t comma = spec.find(',');
    disk.path = spec.substr(0, comma);
    while (comma != std::string::npos) {
        std::size_t next = spec.find(',', comma + 1);
        std::string opt = spec.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        if (opt == "ro") disk.read_only = true;
        else if (opt == "rw") disk.read_only = false;
        else return "-d/--disk " + spec + ": unknown option '" + opt + "'; the only option is ',ro' (read-only)";
        comma = next;
    }
    if (disk.path.empty()) return "-d/--disk " + spec + ": no file name; use -d FILE or -d FILE,ro";
    return {};
}

// "DIR", "DIR,TAG", "DIR,ro", "DIR,TAG,ro". Returns an error text, or empty.
std::string parse_share(const std::string& spec, ShareConfig& share) {
    std::size_t comma = spec.find(',');
    share.dir = spec.substr(0, comma);
    bool tag_given = false;
    while (comma != std::string::npos) {
        std::size_t next = spec.find(',', comma + 1);
        std::string opt = spec.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        if (opt == "ro") share.read_only = true;
        else if (opt == "rw") share.read_only = false;
        else if (opt == "suid") share.allow_setid = true;
        else if (!tag_given && !opt.empty()) {
            share.tag = opt;
            tag_given = true;
        } else return "--9p " + spec + ": unexpected '" + opt + "'; use --9p DIR[,TAG][,ro][,suid]";
        comma = next;
    }
    if (share.dir.empty()) return "--9p " + spec + ": no directory; use --9p DIR[,TAG][,ro][,suid]";
    if (!tag_given) share.tag = kDefaultShareTag;  // kvmtool's default tag
    return {};
}

// -m/--mem: kvmtool's forms, a plain number of MiB or a number with a K, M, G or T suffix (binary
// units). Returns an error text, or empty.
std::string parse_mem(const std::string& text, std::uint64_t& mib) {
    const std::string fix =
        "-m/--mem " + text + ": give the guest RAM in MiB (-m 512) or with a K, M, G or T suffix (-m 1G)";
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    const std::string suffix = text.substr(digits);
    if (digits == 0 || digits > 19 || suffix.size() > 1) return fix;
    const std::uint64_t value = std::stoull(text.substr(0, digits));  // at most 19 digits: fits
    std::uint64_t kib_per_unit = 0;
    switch (suffix.empty() ? 'M' : suffix[0]) {
        case 'K':
        case 'k': kib_per_unit = 1; break;
        case 'M':
        case 'm': kib_per_unit = 1024; break;
        case 'G':
        case 'g': kib_per_unit = 1024 * 1024; break;
        case 'T':
        case 't': kib_per_unit = 1024 * 1024 * 1024; break;
        default: return fix;
    }
    if (value > UINT64_MAX / kib_per_unit) return "-m/--mem " + text + ": too large";
    const std::uint64_t kib = value * kib_per_unit;
    if (kib % 1024 != 0) return "-m/--mem " + text + ": not a whole number of MiB; guest RAM comes in MiB";
    mib = kib / 1024;
    return {};
}

// kvmtool's -n parameters lkvm has no use for are refused by name; the no-op values kvmtool
// itself defaults to are accepted. fd=N (an open tap, as a parent process passes it) becomes
// NetConfig::tap_fd. `-n none|user|tap` is short for mode=. The rest is parse_network's.
std::string parse_kvmtool_network(const std::string& spec, NetConfig& net) {
    const std::string all = "-n/--network " + spec;
    if (spec == "none" || spec == "user" || spec == "tap") return parse_network("mode=" + spec, net);
    std::string rest;
    std::optional<int> fd;
    bool mode_given = false;
    std::size_t start = 0;
    while (start <= spec.size() && !spec.empty()) {
        const std::size_t end = std::min(spec.find(',', start), spec.size());
        const std::string item = spec.substr(start, end - start);
        start = end + 1;
        const std::size_t eq = item.find('=');
        const std::string key = item.substr(0, eq);
        const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
        if ((key == "script" || key == "downscript") && value != "none")
            return all + ": " + key +
                   "= is not supported: lkvm runs no tap scripts; set the tap up beforehand and "
                   "pass tapif=NAME or fd=N";
        if (key == "vhost" && value != "0" && value != "off")
            return all + ": vhost= is not supported: lkvm serves the virtio-net queues itself (no vhost-net); drop it";
        if (key == "mq" && value != "1")
            return all + ": mq= is not supported: lkvm's virtio-net has one queue pair; drop it";
        if (key == "trans" && value != "mmio")
            return all + ": trans=" + value + " is not supported: lkvm's virtio devices are virtio-mmio; drop it";
        if (key == "host_mac")
            return all +
                   ": host_mac= is not supported: set the tap's address on the host (ip link set TAP address MAC)";
        if (key == "fd") {
            const bool digits =
                !value.empty() && value.size() <= 9 && value.find_first_not_of("0123456789") == std::string::npos;
            if (!digits) return all + ": fd=" + value + ": give the number of an open tap file descriptor, e.g. fd=3";
            fd = std::stoi(value);
            continue;
        }
        if (key == "script" || key == "downscript" || key == "vhost" || key == "mq" || key == "trans") continue;
        mode_given = mode_given || key == "mode";
        rest += (rest.empty() ? "" : ",") + item;
    }
    if (fd && !mode_given) rest = "mode=tap" + (rest.empty() ? "" : "," + rest);
    if (std::string error = parse_network(rest, net); !error.empty()) return error;
    if (!fd) return {};
    if (net.mode != NetMode::Tap) return all + ": fd= is an open tap: it needs mode=tap";
    if (!net.tapif.empty()) return all + ": give tapif= or fd=, not both";
    net.tap_fd = *fd;
    return {};
}

// kvmtool flags lkvm does not have, each with what to use instead: one line rather than CLI11's
// "The following argument was not expected".
struct KvmtoolOnlyFlag {
    std::string_view flag;
    std::string_view instead;
};
constexpr KvmtoolOnlyFlag kKvmtoolOnlyFlags[] = {
    {"--balloon", "lkvm has no virtio-balloon; size the guest with -m"},
    {"--vsock",
     "lkvm has no virtio-vsock; reach the guest over -n mode=user,hostfwd=tcp:HOSTPORT-GUESTPORT or share "
     "files with --9p DIR"},
    {"--loglevel", "use --debug for lkvm's own messages and -p loglevel=N for the guest kernel's"},
    {"--irqchip", "lkvm always uses KVM's in-kernel GICv3"},
    {"--firmware", "lkvm boots a Linux Image directly: use -k IMAGE"},
    {"--vnc", "lkvm has no framebuffer; the console is the terminal (--console serial|virtio)"},
    {"--sdl", "lkvm has no framebuffer; the console is the terminal (--console serial|virtio)"},
    {"--gtk", "lkvm has no framebuffer; the console is the terminal (--console serial|virtio)"},
    {"--vidmode", "lkvm has no framebuffer; the console is the terminal (--console serial|virtio)"},
    {"--tty", "the guest console is lkvm's own terminal (stdin/stdout)"},
    {"--dev", "lkvm always opens /dev/kvm"},
    {"--kvm-dev", "lkvm always opens /dev/kvm"},
    {"--hugetlbfs", "lkvm backs guest RAM with anonymous memory only"},
    {"--aarch32", "lkvm boots 64-bit arm64 kernels only"},
    {"--sandbox", "run a command in a throwaway guest with `lkvm sandbox -k IMAGE -- CMD`"},
    {"--virtio-legacy", "lkvm's virtio devices are virtio 1.x (modern) over virtio-mmio"},
    {"--virtio-transport", "lkvm's virtio devices are virtio-mmio"},
    {"--force-pci", "lkvm's virtio devices are virtio-mmio"},
    {"--shmem", "share host files with --9p DIR instead"},
    {"--no-dhcp", "mode=user always serves DHCP; use -n mode=tap for a network you configure yourself"},
    {"--virtio-9p", "lkvm spells it --9p DIR[,TAG]"},
    {"--guest-mac", "use -n guest_mac=MAC"},
    {"--host-ip-addr", "use -n host_ip=A.B.C.D"},
    {"--tapscript", "lkvm runs no tap scripts; set the tap up beforehand and pass -n mode=tap,tapif=NAME"},
    {"--disable-mte", "lkvm does not give guests MTE"},
    {"--realm", "lkvm does not run Arm CCA realms"},
    {"--debug-single-step", "use --debug"},
    {"--debug-ioport", "use --debug"},
    {"--debug-mmio", "use --debug"},
    {"--debug-iodelay", "use --debug"},
};

// The first kvmtool-only flag among `args` (up to a sandbox's `--`), as its error text; or empty.
std::string kvmtool_only_flag(int argc, const char* const* argv) {
    for (int i = 2; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--") break;
        if (arg == "-f") arg = "--firmware";
        arg = arg.substr(0, arg.find('='));
        for (const KvmtoolOnlyFlag& known : kKvmtoolOnlyFlags)
            if (arg == known.flag)
                return std::string(known.flag) + ": lkvm does not have this kvmtool flag; " +
                       std::string(known.instead);
    }
    return {};
}

Exit usage_error(const std::string& message, const std::string& hint_command, int code = kExitUsage) {
    // One line: scripts and people both read the first line of an error.
    return Exit{code, "", "lkvm: error: " + message + " (see '" + hint_command + " --help')\n"};
}

// The run flags as a VmConfig (shared by run and sandbox), or the usage error with `code`.
std::variant<VmConfig, Exit> finish_config(RunOptions& options, const std::string& hint, int code) {
    VmConfig config = std::move(options.config);
    if (options.console == "serial") config.console = ConsoleKind::Serial;
    else if (options.console == "virtio") config.console = ConsoleKind::Virtio;
    else return usage_error("--console " + options.console + ": choose serial or virtio", hint, code);
    if (options.params_option->count() > 0) config.params = options.params;
    if (std::string error = parse_mem(options.mem, config.mem_mib); !error.empty())
        return usage_error(error, hint, code);
    if (options.viommu_option->count() > 0) {
        ViommuConfig viommu;
        if (std::string error = parse_viommu(options.viommu, viommu); !error.empty())
            return usage_error(error, hint, code);
        config.viommu = viommu;
    }
    // A bare -n is mode=user with the defaults (CLI11 records it as an empty value, or not at all).
    if (options.network_specs.size() < options.network_option->count())
        options.network_specs.resize(options.network_option->count());
    for (const std::string& spec : options.network_specs) {
        NetConfig net;
        if (std::string error = parse_kvmtool_network(spec, net); !error.empty()) return usage_error(error, hint, code);
        config.nets.push_back(net);
    }
    // BDF syntax here, before any KVM or VFIO setup; whether the device exists is checked there.
    for (const std::string& bdf : config.vfio_pci)
        if (!devices::vfio::normalize_bdf(bdf))
            return usage_error("--vfio-pci " + bdf +
                                   ": not a PCI address; expected DDDD:BB:DD.F or BB:DD.F (hex, device 00-1f, "
                                   "function 0-7), e.g. 0000:01:00.0",
                               hint, code);
    for (const std::string& spec : options.disk_specs) {
        DiskConfig disk;
        if (std::string error = parse_disk(spec, disk); !error.empty()) return usage_error(error, hint, code);
        config.disks.push_back(disk);
    }
    if (!options.rootfs.empty()) config.shares.push_back({options.rootfs, std::string(kRootShareTag), false});
    for (const std::string& spec : options.share_specs) {
        ShareConfig share;
        if (std::string error = parse_share(spec, share); !error.empty()) return usage_error(error, hint, code);
        config.shares.push_back(share);
    }
    return config;
}

// `lkvm sandbox`: usage errors exit kExitSandboxFailed, so that a status below 125 is always CMD's.
Command sandbox_request(RunOptions& options, std::string workdir, std::vector<std::string> argv) {
    const std::string hint = "lkvm sandbox";
    if (argv.empty())
        return usage_error("no command to run; put it after '--': lkvm sandbox -k IMAGE [flags] -- CMD [ARGS...]", hint,
                           kExitSandboxFailed);
    if (workdir.empty()) return usage_error("--workdir: empty directory name", hint, kExitSandboxFailed);
    auto config = finish_config(options, hint, kExitSandboxFailed);
    if (auto* exit = std::get_if<Exit>(&config)) return *exit;
    // The sandbox writes the whole kernel command line itself (vmm/sandbox/session.hpp).
    std::get<VmConfig>(config).nodefaults = true;
    // CMD is the code to contain: the host's loopback services (databases, agents, metadata
    // proxies that trust 127.0.0.1) stay out of its reach unless host_loopback=on is given.
    for (NetConfig& net : std::get<VmConfig>(config).nets)
        if (net.mode == NetMode::User && !net.host_loopback) net.host_loopback = false;
    return sandbox::Request{std::move(std::get<VmConfig>(config)), std::move(workdir), std::move(argv)};
}

}  // namespace

const char* git_commit() {
#ifdef LKVM_GIT_COMMIT
    return LKVM_GIT_COMMIT;
#else
    return "unknown";
#endif
}

std::string version_text() { return std::string("lkvm ") + kVersion + " (git " + git_commit() + ")\n"; }

Command parse(int argc, const char* const* argv) {
    CLI::App app{"lkvm: a small KVM virtual machine monitor for arm64 Linux guests", "lkvm"};
    app.set_version_flag("--version", version_text());
    app.require_subcommand(1);
    app.fallthrough(false);

    // Subcommands, one line each.
    CLI::App* run = app.add_subcommand("run", "boot a guest: lkvm run -k Image [-i initrd] [-p cmdline] ...");
    CLI::App* sandbox = app.add_subcommand(
        "sandbox",
        "run CMD in a throwaway guest that sees the host's files: lkvm sandbox -k Image [-i initrd] -- CMD [ARGS...]");
    CLI::App* version = app.add_subcommand("version", "print lkvm's version and the git commit it was built from");
    std::string help_topic;
    CLI::App* help = app.add_subcommand("help", "show lkvm's help, or one command's: lkvm help [COMMAND]");
    help->add_option("command", help_topic, "the command")->type_name("COMMAND");
    ControlCommand control;
    std::string name_option;  // -n/--name NAME: kvmtool's spelling of the positional NAME
    CLI::App* list = app.add_subcommand("list", "list the running guests: NAME PID STATE (removes stale sockets)");
    CLI::App* stop =
        app.add_subcommand("stop", "stop a running guest in order (as SIGTERM): lkvm stop NAME | -n NAME | --all");
    CLI::App* stat = app.add_subcommand("stat", "show a guest's devices and vIOMMU counters: lkvm stat NAME | -n NAME");
    CLI::App* debug = app.add_subcommand(
        "debug", "lkvm debug NAME|-n NAME dump | fault EPID [read|write] [ADDRESS] | fail-next blkN|EPID [COUNT]");
    for (CLI::App* sub : {stop, stat, debug}) {
        sub->add_option("name", control.name, "the guest's --name");
        sub->add_option("-n,--name", name_option, "the guest's --name (kvmtool's form)")->type_name("NAME");
    }
    stop->add_flag("-a,--all", control.all, "stop every running guest");
    debug->add_option("command", control.words,
                      "dump: IOMMU mappings; fault: report a fault on the virtio-iommu eventq; "
                      "fail-next: fail the next COUNT requests of a disk");
    for (CLI::App* sub : {list, stop, stat, debug})
        sub->footer("Control sockets: $XDG_RUNTIME_DIR/lkvm/NAME.sock, else ~/.lkvm/NAME.sock (owner only).");

    RunOptions options;
    add_run_options(*run, options);
    run->footer(
        "The guest console is the 16550 UART at ttyS0 (and earlycon). The kernel command line is\n"
        "\"console=ttyS0 earlycon\" (\"console=hvc0 earlycon\" with --console virtio), then \"root=/dev/vda rw\"\n"
        "with a -d disk (unless -p has root=) or the 9p root words with --rootfs, then -p;\n"
        "--nodefaults: -p alone. lkvm prints it at start.\n"
        "--viommu: the virtio-iommu is the first virtio-mmio device; the device in virtio-mmio\n"
        "slot i is endpoint 0x10000+i (iommus = <&viommu 0x10000+i>), PCI functions use their\n"
        "requester ID. Endpoints offer VIRTIO_F_ACCESS_PLATFORM; bypass=1 lets them DMA\n"
        "untranslated until the guest's driver attaches them (also the iommu.passthrough=1 path).\n"
        "poll=US: after a kick of its request queue a host thread serves the guest's MAP/UNMAP\n"
        "requests without further kicks (no VM exit each) until US microseconds pass idle; 0 = off.\n"
        "Console keys on a terminal: Ctrl-C goes to the guest; Ctrl-A x ends lkvm, Ctrl-A Ctrl-A\n"
        "sends Ctrl-A, Ctrl-A h lists the keys. A guest reboot restarts it unless --no-reboot.\n"
        "-n/--network: without -n the guest gets one mode=user NIC (-n none: no NIC). mode=user\n"
        "gives the guest 10.0.2.15 by DHCP behind a NAT gateway 10.0.2.2 (DNS 10.0.2.3; the gateway\n"
        "is the host's 127.0.0.1 unless host_loopback=off, and restrict=on keeps the guest from\n"
        "reaching anything); hostfwd=tcp:HOSTPORT-GUESTPORT forwards 127.0.0.1:HOSTPORT into the\n"
        "guest (tcp:ADDR:HOSTPORT-GUESTPORT another address).\n"
        "--name NAME: `lkvm list`, `lkvm stop -n NAME`, `lkvm stat -n NAME`, `lkvm debug -n NAME ...`.\n" +
        std::string(kRunExitHelp));

    RunOptions sandbox_options;
    std::string sandbox_workdir = ".";
    add_run_options(*sandbox, sandbox_options);
    // The sandbox chooses the consoles and the root itself, never reboots, and always boots.
    for (const char* flag : {"--console", "--rootfs", "--no-reboot", "--dump-dtb", "--nodefaults"})
        sandbox->remove_option(sandbox->get_option(flag));
    sandbox->get_option("--params")->description("added to the sandbox's kernel command line (see below)");
    sandbox
        ->add_option("--workdir", sandbox_workdir,
                     "host directory shared read-write at the same path; CMD's working directory")
        ->type_name("DIR")
        ->capture_default_str();
    sandbox->footer(
        "Boots IMAGE with lkvm's own init (appended to -i's initrd, which must hold the kernel's\n"
        "virtio_mmio, 9p and 9pnet_virtio modules under /lib/modules/RELEASE unless they are built\n"
        "in), runs CMD in the guest and powers it off. The guest sees the host's / read-only (the\n"
        "host's binaries: an arm64 host), --workdir read-write at its own path (CMD starts there),\n"
        "a fresh tmpfs on /tmp, its own /proc, /sys and /dev; PATH=/usr/local/sbin:/usr/local/bin:\n"
        "/usr/sbin:/usr/bin:/sbin:/bin, HOME=/tmp, TERM=dumb, stdin /dev/null. CMD's stdout is\n"
        "lkvm's stdout (virtio-console), its stderr and the kernel's messages are lkvm's stderr\n"
        "(UART). -p adds to \"console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/lkvm-init\".\n" +
        std::string(kSandboxExitHelp));

    // Everything after the first `--` of `lkvm sandbox` is CMD: it is never parsed as flags.
    std::vector<std::string> sandbox_argv;
    if (argc > 2 && std::string_view(argv[1]) == "sandbox") {
        for (int i = 2; i < argc; ++i) {
            if (std::string_view(argv[i]) != "--") continue;
            sandbox_argv.assign(argv + i + 1, argv + argc);
            argc = i;
            break;
        }
    }

    if (argc <= 1) return Exit{kExitUsage, "", app.help()};
    // CLI11 would report a mistyped command as "a subcommand is required"; name it instead.
    if (std::string first = argv[1]; !first.empty() && first[0] != '-') {
        std::string known;
        bool found = false;
        for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
            known += (known.empty() ? "" : ", ") + sub->get_name();
            found = found || sub->check_name(first);
        }
        if (!found) return usage_error("unknown command '" + first + "'; the commands are: " + known, "lkvm");
        if (first == "run" || first == "sandbox")
            if (std::string error = kvmtool_only_flag(argc, argv); !error.empty())
                return usage_error(error, "lkvm " + first, first == "sandbox" ? kExitSandboxFailed : kExitUsage);
    }
    // CLI11's help() of a parsed app is the selected subcommand's: keep the top level's.
    const std::string top_help = app.help();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        return Exit{0, app.help(), ""};
    } catch (const CLI::CallForAllHelp&) {
        return Exit{0, app.help("", CLI::AppFormatMode::All), ""};
    } catch (const CLI::CallForVersion&) {
        return Exit{0, version_text(), ""};
    } catch (const CLI::ParseError& e) {
        if (sandbox->parsed()) {
            // Without `--`, CMD's words reach the flag parser: say where they belong.
            const std::string hint =
                sandbox_argv.empty() ? "; put CMD after '--': lkvm sandbox -k IMAGE [flags] -- CMD [ARGS...]" : "";
            return usage_error(e.what() + hint, "lkvm sandbox", kExitSandboxFailed);
        }
        std::string hint = "lkvm";
        for (const CLI::App* sub : {run, list, stop, stat, debug, help})
            if (sub->parsed()) hint += " " + sub->get_name();
        return usage_error(e.what(), hint);
    }

    if (version->parsed()) return Exit{0, version_text(), ""};
    if (help->parsed()) {
        if (help_topic.empty()) return Exit{0, top_help, ""};
        for (CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
            if (sub->check_name(help_topic)) return Exit{0, sub->help(), ""};
        return usage_error("help " + help_topic + ": no such command", "lkvm");
    }
    if (list->parsed()) return ControlCommand{ControlCommand::Kind::List, "", {}, false};
    if (stop->parsed() || stat->parsed() || debug->parsed()) {
        CLI::App* sub = stop->parsed() ? stop : stat->parsed() ? stat : debug;
        const std::string hint = "lkvm " + sub->get_name();
        control.kind = stop->parsed()   ? ControlCommand::Kind::Stop
                       : stat->parsed() ? ControlCommand::Kind::Stat
                                        : ControlCommand::Kind::Debug;
        if (!name_option.empty()) {
            // With -n NAME every positional word is the debug command's.
            if (debug->parsed() && !control.name.empty()) control.words.insert(control.words.begin(), control.name);
            else if (!control.name.empty())
                return usage_error(
                    "the guest's name is given twice ('" + control.name + "' and -n " + name_option + "); give it once",
                    hint);
            control.name = name_option;
        }
        if (control.all && !control.name.empty())
            return usage_error("--all stops every guest; drop the name, or drop --all", hint);
        if (!control.all && control.name.empty()) return usage_error("which guest? give its name: -n NAME", hint);
        if (debug->parsed() && control.words.empty())
            return usage_error("no debug command; give dump, fault or fail-next after the name", hint);
        return control;
    }

    if (sandbox->parsed()) return sandbox_request(sandbox_options, std::move(sandbox_workdir), std::move(sandbox_argv));
    auto config = finish_config(options, "lkvm run", kExitUsage);
    if (auto* exit = std::get_if<Exit>(&config)) return *exit;
    VmConfig& run_config = std::get<VmConfig>(config);
    // kvmtool's default: a user-mode NIC unless -n says otherwise (-n none: no NIC).
    if (options.network_option->count() == 0) run_config.nets.push_back(NetConfig{});
    run_config.console_keys = true;
    return Run{std::move(run_config)};
}

}  // namespace vmm::cli
