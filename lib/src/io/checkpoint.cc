#include "nibble/io/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::BadFormat;
using internal::IoError;
using internal::Printable;

namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxIndexSize = 100000000;

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool EndsWith(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

Status ReadSmallFile(const std::string& path, uint64_t limit,
                     std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open " + path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return IoError("cannot stat " + path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Status(StatusCode::kIoError, path + ": not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) >= limit) {
    close(fd);
    return BadFormat(path,
                     "file of " + std::to_string(st.st_size) +
                         " bytes is not below the limit of " +
                         std::to_string(limit),
                     0);
  }
  try {
    out->resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    close(fd);
    return Status(StatusCode::kInternal, path + ": out of memory");
  }
  size_t done = 0;
  while (done < out->size()) {
    ssize_t r =
        pread(fd, &(*out)[done], out->size() - done, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      close(fd);
      return IoError("cannot read " + path, err);
    }
    if (r == 0) break;  // shrank meanwhile: parse what is there
    done += static_cast<size_t>(r);
  }
  out->resize(done);
  close(fd);
  return Status::Ok();
}

// Why a shard name from the index is not a plain file name, or "".
std::string BadShardName(const std::string& name) {
  if (name.empty()) return "is empty";
  if (name == "." || name == "..") return "is '" + name + "'";
  if (name.find('\0') != std::string::npos) return "contains a NUL byte";
  if (name.find('/') != std::string::npos) {
    return name[0] == '/' ? "is an absolute path" : "contains a '/'";
  }
  if (name.find('\\') != std::string::npos) return "contains a '\\'";
  return "";
}

// Index parsed into what the checks need.
struct IndexEntry {
  std::string tensor;
  std::string shard;
  int64_t offset;  // of the tensor's key in the index file
};

Status ParseIndex(const std::string& path, const std::string& text,
                  std::vector<IndexEntry>* entries, double* total_size) {
  *total_size = -1;
  const char* cursor = text.data();
  // Duplicate keys: nlohmann keeps the last one silently, so track the keys
  // of every open object through the parser callback.
  std::vector<std::set<std::string>> open_keys;
  std::string duplicate;
  int64_t duplicate_offset = -1;
  std::string top_key;
  std::map<std::string, int64_t> weight_offsets;
  auto offset_of_key = [&]() {
    const char* start = internal::FindStringStart(text.data(), cursor);
    return static_cast<int64_t>(start - text.data());
  };
  Json::parser_callback_t cb = [&](int depth, Json::parse_event_t event,
                                   Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_keys.empty()) open_keys.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!open_keys.empty() && !open_keys.back().insert(k).second &&
            duplicate_offset < 0) {
          duplicate = k;
          duplicate_offset = offset_of_key();
        }
        if (depth == 1) top_key = k;
        if (depth == 2 && top_key == "weight_map") {
          weight_offsets.emplace(k, offset_of_key());
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  if (const void* nul = std::memchr(text.data(), '\0', text.size())) {
    // nlohmann's lexer would stop there as if the input ended.
    return BadFormat(path, "index contains a NUL byte",
                     static_cast<const char*>(nul) - text.data());
  }
  Json doc;
  try {
    internal::TrackingIterator first(text.data(), &cursor);
    internal::TrackingIterator last(text.data() + text.size(), &cursor);
    doc = Json::parse(first, last, cb, /*allow_exceptions=*/true,
                      /*ignore_comments=*/false);
  } catch (const Json::parse_error& e) {
    std::string what = e.what();
    size_t cut = what.find("] ");
    if (cut != std::string::npos) what = what.substr(cut + 2);
    int64_t pos = e.byte > 0 ? static_cast<int64_t>(e.byte) - 1 : 0;
    return BadFormat(path, "index is not valid JSON: " + what, pos);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, path + ": out of memory");
  } catch (const std::exception& e) {
    return BadFormat(path, std::string("index is not valid JSON: ") + e.what(),
                     0);
  }
  if (duplicate_offset >= 0) {
    return BadFormat(path, "duplicate key '" + Printable(duplicate) + "'",
                     duplicate_offset);
  }
  if (!doc.is_object()) {
    return BadFormat(path, "index is not a JSON object", 0);
  }
  auto wm = doc.find("weight_map");
  if (wm == doc.end()) return BadFormat(path, "index has no 'weight_map'", 0);
  if (!wm->is_object()) {
    return BadFormat(path, "'weight_map' is not an object", 0);
  }
  auto md = doc.find("metadata");
  if (md != doc.end()) {
    if (!md->is_object()) {
      return BadFormat(path, "'metadata' is not an object", 0);
    }
    auto ts = md->find("total_size");
    if (ts != md->end()) {
      if (!ts->is_number() || ts->get<double>() < 0) {
        return BadFormat(
            path, "'metadata.total_size' is not a non-negative number", 0);
      }
      *total_size = ts->get<double>();
    }
  }
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    auto off = weight_offsets.find(it.key());
    int64_t offset = off == weight_offsets.end() ? 0 : off->second;
    if (!it.value().is_string()) {
      return BadFormat(path,
                       "weight_map entry '" + Printable(it.key()) +
                           "': shard name is not a string",
                       offset);
    }
    entries->push_back({it.key(), it.value().get<std::string>(), offset});
  }
  // Report problems in the order the file lists them.
  std::stable_sort(entries->begin(), entries->end(),
                   [](const IndexEntry& a, const IndexEntry& b) {
                     return a.offset < b.offset;
                   });
  return Status::Ok();
}

// Looks like a safetensors file: plausible header length, JSON object start.
bool SniffSafetensors(const std::string& path, bool* is_gguf) {
  *is_gguf = false;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char buf[64];
  ssize_t n = pread(fd, buf, sizeof(buf), 0);
  struct stat st;
  bool have_stat = fstat(fd, &st) == 0;
  close(fd);
  if (n >= 4 && std::memcmp(buf, "GGUF", 4) == 0) {
    *is_gguf = true;
    return false;
  }
  if (n < 9 || !have_stat) return false;
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | buf[i];
  if (len >= kMaxSafetensorsHeader ||
      len > static_cast<uint64_t>(st.st_size) - 8) {
    return false;
  }
  for (ssize_t i = 8; i < n && static_cast<uint64_t>(i) < 8 + len; ++i) {
    unsigned char c = buf[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '{';
  }
  return false;
}

Status NotACheckpoint(const std::string& path, const std::string& why) {
  return Status(StatusCode::kBadFormat,
                path + ": not a safetensors or GGUF checkpoint (" + why + ")");
}

}  // namespace

Checkpoint::~Checkpoint() = default;

const CheckpointTensor* Checkpoint::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

Status Checkpoint::Open(const std::string& path,
                        std::unique_ptr<Checkpoint>* out) {
  out->reset();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return IoError("cannot open " + path, errno);
  }
  std::unique_ptr<Checkpoint> c(new Checkpoint());
  try {
    if (S_ISREG(st.st_mode)) {
      bool is_gguf = false;
      bool looks = SniffSafetensors(path, &is_gguf);
      if (is_gguf) {
        return Status(StatusCode::kUnsupported,
                      path + ": a GGUF file; this reader takes safetensors");
      }
      if (!looks && !EndsWith(path, ".safetensors")) {
        return NotACheckpoint(path, "neither safetensors nor GGUF contents");
      }
      size_t slash = path.rfind('/');
      c->directory_ = slash == std::string::npos ? "."
                      : slash == 0               ? "/"
                                                 : path.substr(0, slash);
      c->layout_ = Layout::kFile;
      std::unique_ptr<SafetensorsFile> f;
      Status s = SafetensorsFile::Open(path, &f);
      if (!s.ok()) return s;
      c->shards_.push_back(std::move(f));
      c->shard_names_.push_back(
          slash == std::string::npos ? path : path.substr(slash + 1));
    } else if (S_ISDIR(st.st_mode)) {
      c->directory_ = path;
      const std::string single = Join(path, kSafetensorsSingleName);
      const std::string index = Join(path, kSafetensorsIndexName);
      struct stat fst;
      if (stat(single.c_str(), &fst) == 0) {
        c->layout_ = Layout::kDirectory;
        std::unique_ptr<SafetensorsFile> f;
        Status s = SafetensorsFile::Open(single, &f);
        if (!s.ok()) return s;
        c->shards_.push_back(std::move(f));
        c->shard_names_.push_back(kSafetensorsSingleName);
      } else if (stat(index.c_str(), &fst) == 0) {
        c->layout_ = Layout::kShardedDirectory;
        c->index_path_ = index;
        Status s = c->OpenSharded();
        if (!s.ok()) return s;
      } else {
        return NotACheckpoint(path, std::string("a directory without ") +
                                        kSafetensorsSingleName + " or " +
                                        kSafetensorsIndexName);
      }
      Status s = c->ListDirectory();
      if (!s.ok()) return s;
    } else {
      return NotACheckpoint(path, "not a regular file or directory");
    }
    // Stable order: shards in name order, each in data order.
    if (c->tensors_.empty()) {
      for (size_t s = 0; s < c->shards_.size(); ++s) {
        const SafetensorsFile& f = *c->shards_[s];
        for (size_t i : f.data_order()) {
          c->tensors_.push_back({s, &f.tensors()[i]});
        }
      }
    }
    for (size_t i = 0; i < c->tensors_.size(); ++i) {
      c->by_name_.emplace(c->tensors_[i].info->name, i);
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, path + ": out of memory");
  }
  *out = std::move(c);
  return Status::Ok();
}

Status Checkpoint::OpenSharded() {
  std::string text;
  Status s = ReadSmallFile(index_path_, kMaxIndexSize, &text);
  if (!s.ok()) return s;
  std::vector<IndexEntry> entries;
  s = ParseIndex(index_path_, text, &entries, &index_total_size_);
  if (!s.ok()) return s;
  // Shard names, first reference of each.
  std::map<std::string, int64_t> shard_first_offset;
  for (const IndexEntry& e : entries) {
    std::string why = BadShardName(e.shard);
    if (!why.empty()) {
      return BadFormat(index_path_,
                       "tensor '" + Printable(e.tensor) + "': shard name '" +
                           Printable(e.shard) + "' " + why +
                           " (shards must be plain file names in the model "
                           "directory)",
                       e.offset);
    }
    shard_first_offset.emplace(e.shard, e.offset);
  }
  std::map<std::string, size_t> shard_index;
  for (const auto& kv : shard_first_offset) {
    const std::string shard_path = Join(directory_, kv.first);
    struct stat st;
    if (stat(shard_path.c_str(), &st) != 0) {
      return BadFormat(index_path_,
                       "shard '" + Printable(kv.first) + "' does not exist (" +
                           std::strerror(errno) + ")",
                       kv.second);
    }
    if (!S_ISREG(st.st_mode)) {
      return BadFormat(
          index_path_,
          "shard '" + Printable(kv.first) + "' is not a regular file",
          kv.second);
    }
    std::unique_ptr<SafetensorsFile> f;
    s = SafetensorsFile::Open(shard_path, &f);
    if (!s.ok()) return s;
    shard_index.emplace(kv.first, shards_.size());
    shards_.push_back(std::move(f));
    shard_names_.push_back(kv.first);
  }
  // Where each tensor really is.
  std::unordered_map<std::string_view, size_t> found;
  for (size_t si = 0; si < shards_.size(); ++si) {
    for (const TensorInfo& t : shards_[si]->tensors()) {
      auto ins = found.emplace(t.name, si);
      if (!ins.second) {
        return BadFormat(shards_[si]->path(),
                         "tensor '" + Printable(t.name) +
                             "' is present in two shards, '" +
                             shard_names_[ins.first->second] + "' and '" +
                             shard_names_[si] + "'",
                         t.header_offset);
      }
    }
  }
  std::unordered_map<std::string_view, const IndexEntry*> indexed;
  for (const IndexEntry& e : entries) {
    indexed.emplace(e.tensor, &e);
    size_t want = shard_index.at(e.shard);
    auto it = found.find(e.tensor);
    if (it == found.end() || it->second != want) {
      std::string where = it == found.end()
                              ? std::string("no shard holds it")
                              : "it is in '" + shard_names_[it->second] + "'";
      return BadFormat(index_path_,
                       "tensor '" + Printable(e.tensor) +
                           "' is listed in shard '" + Printable(e.shard) +
                           "' but absent from it (" + where + ")",
                       e.offset);
    }
  }
  for (size_t si = 0; si < shards_.size(); ++si) {
    for (size_t i : shards_[si]->data_order()) {
      const TensorInfo& t = shards_[si]->tensors()[i];
      if (indexed.find(t.name) == indexed.end()) {
        return BadFormat(shards_[si]->path(),
                         "tensor '" + Printable(t.name) +
                             "' is not listed in " + kSafetensorsIndexName +
                             " (unlisted tensors are rejected)",
                         t.header_offset);
      }
      tensors_.push_back({si, &t});
    }
  }
  return Status::Ok();
}

Status Checkpoint::ListDirectory() {
  DIR* d = opendir(directory_.c_str());
  if (d == nullptr) return IoError("cannot list " + directory_, errno);
  std::set<std::string> used(shard_names_.begin(), shard_names_.end());
  if (!index_path_.empty()) used.insert(kSafetensorsIndexName);
  errno = 0;
  while (struct dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (stat(Join(directory_, name).c_str(), &st) != 0) continue;  // dangling
    if (S_ISDIR(st.st_mode)) {
      subdirectories_.push_back(name);
    } else if (S_ISREG(st.st_mode) && used.count(name) == 0) {
      if (EndsWith(name, ".safetensors")) {
        unused_safetensors_.push_back(name);
      } else if (name != kSafetensorsIndexName) {
        other_files_.push_back(name);
      }
    }
  }
  closedir(d);
  std::sort(other_files_.begin(), other_files_.end());
  std::sort(unused_safetensors_.begin(), unused_safetensors_.end());
  std::sort(subdirectories_.begin(), subdirectories_.end());
  return Status::Ok();
}

}  // namespace io
}  // namespace nibble
