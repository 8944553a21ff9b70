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
#include <elf.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/file_io.h"
#include "test/emu/emu_internal.h"

namespace emu {

namespace {

struct TlsVariable {
  size_t offset;
  size_t size;
};

std::vector<TlsVariable> find_shared_variables() {
  std::vector<TlsVariable> vars;
  MappedFile exe;
  try {
    exe = MappedFile("/proc/self/exe");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "emu: warning: cannot read /proc/self/exe (%s): static __shared__ "
                 "memory is not NaN-filled\n", e.what());
    return vars;
  }
  const unsigned char* data = exe.data;
  const size_t size = exe.size;
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(data, ELFMAG, SELFMAG) != 0) return vars;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data);
  if (eh->e_shoff == 0 || eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > size)
    return vars;
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
      if (ELF64_ST_TYPE(sym.st_info) != STT_TLS || sym.st_size == 0 ||
          sym.st_name >= strtab.sh_size)
        continue;
      const char* name = names + sym.st_name;
      if (std::strncmp(name, "_ZZ", 3) != 0) continue;  // not a function-local static
      bool shared = std::strstr(name, "B8cuda_emu") != nullptr;
      // g++ drops the ABI tag from template instances, whose statics are STB_GNU_UNIQUE: take
      // those too, except the library's own (std::, __gnu_cxx::, Catch::, emu::).
      if (!shared && ELF64_ST_BIND(sym.st_info) == STB_GNU_UNIQUE) {
        static const char* const excluded[] = {"_ZZNSt", "_ZZSt", "_ZZNKSt", "_ZZN9__gnu_cxx",
                                               "_ZZN5Catch", "_ZZNK5Catch", "_ZZN3emu",
                                               "_ZZN8nlohmann"};
        shared = true;
        for (const char* prefix : excluded)
          if (std::strncmp(name, prefix, std::strlen(prefix)) == 0) shared = false;
      }
      if (shared) vars.push_back({(size_t)sym.st_value, (size_t)sym.st_size});
    }
  }
  return vars;
}

const std::vector<TlsVariable>& shared_variables() {
  static std::once_flag once;
  static std::vector<TlsVariable> vars;
  std::call_once(once, [] { vars = find_shared_variables(); });
  return vars;
}

// The calling thread's copy of the executable's TLS segment.
unsigned char* executable_tls_block() {
  unsigned char* block = nullptr;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        // The first object reported is the executable itself.
        *static_cast<unsigned char**>(out) = static_cast<unsigned char*>(info->dlpi_tls_data);
        return 1;
      },
      &block);
  return block;
}

}  // namespace

size_t fill_static_shared_with_nan() {
  const auto& vars = shared_variables();
  if (vars.empty()) return 0;
  static thread_local unsigned char* tls = executable_tls_block();
  if (!tls) return 0;
  size_t filled = 0;
  for (const TlsVariable& v : vars) {
    std::memset(tls + v.offset, kNanByte, v.size);
    filled += v.size;
  }
  return filled;
}

size_t static_shared_bytes() {
  size_t total = 0;
  for (const TlsVariable& v : shared_variables()) total += v.size;
  return total;
}

}  // namespace emu
