// CUDA emulation: finding the static __shared__ variables, to fill them with NaN at block start.
//
// Under emulation `__shared__` is `static thread_local` and device functions carry the ABI tag
// "cuda_emu", so every __shared__ variable is a TLS symbol of the executable whose mangled name is
// a function-local static (_ZZ...) of a tagged function (...B8cuda_emu...). Template instances are
// included, which a named section would miss (g++ puts them in comdat .tbss sections).
// g++ leaves the tag out of template instances' names, so the static locals of template and inline
// functions (binding STB_GNU_UNIQUE) count as __shared__ too: host code linked into an emulation
// test must therefore not keep `static thread_local` state inside inline or template functions.
// In an executable, the value of an STT_TLS symbol is its offset in the TLS segment, and
// dl_iterate_phdr gives the calling thread's copy of that segment (dlpi_tls_data).
//
// Which variables a launch fills: a variable declared in a kernel's body is named
// _ZZ<kernel's mangled name without _Z>E<name>, and kernels cannot call each other, so a launch
// of kernel K fills K's own variables plus those of functions never launched as kernels (device
// helpers such as a block reduction). The variables of other kernels are left alone.
#include <elf.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/file_io.h"
#include "test/emu/emu_internal.h"

namespace emu {

namespace {

struct SharedVariable {
  size_t offset;
  size_t size;
  std::string name;
  int owner = -1;  // index of the kernel whose body declares it, -1 if none known
};

struct SymbolTable {
  std::vector<SharedVariable> shared;
  std::unordered_map<uint64_t, std::string> functions;  // st_value -> mangled name
  uintptr_t load_bias = 0;
  // Kernels seen at launch, and the variables each one fills (recomputed when a new kernel
  // takes ownership of variables that were filled for every kernel until then).
  std::map<const void*, int> kernel_ids;
  std::vector<std::shared_ptr<const SharedFill>> fills;
  std::vector<uint64_t> fill_generation;
  uint64_t generation = 0;
  std::mutex mutex;
};

bool is_shared_symbol(const char* name, unsigned char info) {
  if (std::strncmp(name, "_ZZ", 3) != 0) return false;  // not a function-local static
  if (std::strstr(name, "B8cuda_emu")) return true;
  if (ELF64_ST_BIND(info) != STB_GNU_UNIQUE) return false;
  // Template / inline function statics, except the libraries' own.
  static const char* const excluded[] = {"_ZZNSt", "_ZZSt", "_ZZNKSt", "_ZZN9__gnu_cxx",
                                         "_ZZN5Catch", "_ZZNK5Catch", "_ZZN3emu", "_ZZN8nlohmann"};
  for (const char* prefix : excluded)
    if (std::strncmp(name, prefix, std::strlen(prefix)) == 0) return false;
  return true;
}

void read_symbols(SymbolTable& table) {
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        *static_cast<uintptr_t*>(out) = info->dlpi_addr;  // the executable comes first
        return 1;
      },
      &table.load_bias);
  MappedFile exe;
  try {
    exe = MappedFile("/proc/self/exe");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "emu: warning: cannot read /proc/self/exe (%s): static __shared__ "
                 "memory is not NaN-filled\n", e.what());
    return;
  }
  const unsigned char* data = exe.data;
  const size_t size = exe.size;
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(data, ELFMAG, SELFMAG) != 0) return;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data);
  if (eh->e_shoff == 0 || eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > size) return;
  const auto* sections = reinterpret_cast<const Elf64_Shdr*>(data + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; i++) {
    const Elf64_Shdr& sh = sections[i];
    if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr& strtab = sections[sh.sh_link];
    if (sh.sh_offset + sh.sh_size > size || strtab.sh_offset + strtab.sh_size > size) continue;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(data + sh.sh_offset);
    const char* names = reinterpret_cast<const char*>(data + strtab.sh_offset);
    const size_t nsyms = sh.sh_size / sizeof(Elf64_Sym);
    for (size_t k = 0; k < nsyms; k++) {
      const Elf64_Sym& sym = syms[k];
      if (sym.st_name >= strtab.sh_size) continue;
      const char* name = names + sym.st_name;
      const int type = ELF64_ST_TYPE(sym.st_info);
      if (type == STT_FUNC && sym.st_value != 0 && std::strncmp(name, "_Z", 2) == 0)
        table.functions.emplace(sym.st_value, name);
      else if (type == STT_TLS && sym.st_size > 0 && is_shared_symbol(name, sym.st_info))
        table.shared.push_back({(size_t)sym.st_value, (size_t)sym.st_size, name, -1});
    }
  }
}

SymbolTable& symbols() {
  static SymbolTable* table = [] {
    auto* t = new SymbolTable();  // kept for the life of the process
    read_symbols(*t);
    return t;
  }();
  return *table;
}

// The calling thread's copy of the executable's TLS segment.
unsigned char* executable_tls_block() {
  unsigned char* block = nullptr;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        *static_cast<unsigned char**>(out) = static_cast<unsigned char*>(info->dlpi_tls_data);
        return 1;
      },
      &block);
  return block;
}

}  // namespace

std::shared_ptr<const SharedFill> shared_fill_for(const void* kernel) {
  SymbolTable& t = symbols();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.kernel_ids.find(kernel);
  int id;
  if (it == t.kernel_ids.end()) {
    id = (int)t.kernel_ids.size();
    t.kernel_ids[kernel] = id;
    t.fills.emplace_back();
    t.fill_generation.push_back(0);
    // Claim the variables declared in this kernel's body.
    auto fn = t.functions.find(reinterpret_cast<uintptr_t>(kernel) - t.load_bias);
    if (fn != t.functions.end()) {
      const std::string prefix = "_ZZ" + fn->second.substr(2) + "E";
      bool claimed = false;
      for (SharedVariable& v : t.shared)
        if (v.owner < 0 && v.name.compare(0, prefix.size(), prefix) == 0) {
          v.owner = id;
          claimed = true;
        }
      if (claimed) t.generation++;  // other kernels' lists may shrink
    }
  } else {
    id = it->second;
  }
  if (!t.fills[id] || t.fill_generation[id] != t.generation) {
    auto fill = std::make_shared<SharedFill>();
    for (const SharedVariable& v : t.shared)
      if (v.owner < 0 || v.owner == id) {
        fill->ranges.push_back({v.offset, v.size});
        fill->bytes += v.size;
        if (v.owner == id) fill->kernel_static_bytes += v.size;
      }
    t.fills[id] = fill;
    t.fill_generation[id] = t.generation;
  }
  return t.fills[id];
}

size_t fill_static_shared_with_nan(const SharedFill& fill) {
  if (fill.ranges.empty()) return 0;
  static thread_local unsigned char* tls = executable_tls_block();
  if (!tls) return 0;
  for (const auto& [offset, bytes] : fill.ranges) std::memset(tls + offset, kNanByte, bytes);
  return fill.bytes;
}

size_t static_shared_bytes() {
  size_t total = 0;
  for (const SharedVariable& v : symbols().shared) total += v.size;
  return total;
}

}  // namespace emu
