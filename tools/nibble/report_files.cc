// Report destinations: see report_files.h.
#include "report_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "nibble/io/atomic_file.h"
#include "nibble/nibble.h"
#include "output_dir.h"

namespace nibble::tool {

void ReportDestination::CheckWritable() const {
  if (!enabled() || to_stdout()) return;
  struct stat st;
  const bool existed = ::lstat(path.c_str(), &st) == 0;
  // No O_TRUNC: an existing file is opened but not changed.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) IoError("cannot open '" + path + "': " + std::strerror(errno));
  ::close(fd);
  if (!existed) ::unlink(path.c_str());
}

void WriteReports(std::vector<ReportDestination*> destinations) {
  std::vector<std::unique_ptr<io::AtomicFile>> files;
  for (ReportDestination* d : destinations) {
    if (!d->enabled() || d->to_stdout()) continue;
    std::unique_ptr<io::AtomicFile> f;
    Status st = io::AtomicFile::Create(d->path, true, &f);
    if (st.ok()) st = f->Write(d->text.data(), d->text.size());
    if (!st.ok()) IoError("cannot write '" + d->path + "': " + st.message());
    files.push_back(std::move(f));
  }
  for (const std::unique_ptr<io::AtomicFile>& f : files) {
    const Status st = f->Commit();
    if (!st.ok())
      IoError("cannot write '" + f->final_path() + "': " + st.message());
  }
  for (ReportDestination* d : destinations) {
    if (d->enabled() && d->to_stdout()) std::cout << d->text;
  }
  std::cout.flush();
  if (!std::cout) IoError("cannot write to stdout");
}

void WriteConvertReports(const std::string& json_path,
                         const std::string& csv_path,
                         const std::vector<LayerRow>& rows,
                         const LayerTotals& totals, const std::string& input,
                         const std::string& output) {
  ReportDestination json{json_path, ""}, csv{csv_path, ""};
  if (json.enabled()) {
    nlohmann::ordered_json j;
    j["nibble_version"] = NIBBLE_VERSION_STRING;
    j["input"] = input;
    j["output"] = output;
    j["tensors"] = nlohmann::ordered_json::array();
    for (const LayerRow& r : rows) j["tensors"].push_back(LayerRowJson(r));
    j["totals"] = LayerTotalsJson(totals);
    json.text = j.dump(2) + "\n";
  }
  if (csv.enabled()) csv.text = LayerCsv(rows);
  WriteReports({&json, &csv});
}

}  // namespace nibble::tool
