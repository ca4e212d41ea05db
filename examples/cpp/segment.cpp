// Minimal libtorch client of the exported TorchScript predictor (medsam-lite export --format torchscript).
//
// Usage: segment PREDICTOR.pt IMAGE.raw HEIGHT WIDTH MASK.raw X_MIN Y_MIN X_MAX Y_MAX [X_MIN Y_MIN X_MAX Y_MAX ...]
//   IMAGE.raw: HEIGHT * WIDTH uint8 grey pixels, row-major (no header).
//   boxes: XYXY in original pixel indices; MASK.raw: HEIGHT * WIDTH uint8 label map (box i -> i + 1).
// Exit status 0 on success, 1 on bad usage / input (the artifact's own error message is printed).
#include <torch/script.h>

#include <cstdint>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 10 || (argc - 6) % 4 != 0) {
    std::cerr << "usage: " << argv[0]
              << " PREDICTOR.pt IMAGE.raw HEIGHT WIDTH MASK.raw X_MIN Y_MIN X_MAX Y_MAX [more boxes...]\n";
    return 1;
  }
  const int64_t height = std::stoll(argv[3]);
  const int64_t width = std::stoll(argv[4]);
  std::vector<uint8_t> pixels(static_cast<size_t>(height * width));
  std::ifstream in(argv[2], std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()))) {
    std::cerr << argv[2] << ": cannot read " << pixels.size() << " bytes\n";
    return 1;
  }
  std::vector<float> box_values;
  for (int i = 6; i < argc; ++i) box_values.push_back(std::stof(argv[i]));
  const int64_t n_boxes = static_cast<int64_t>(box_values.size() / 4);

  try {
    torch::jit::script::Module predictor = torch::jit::load(argv[1]);
    predictor.eval();
    torch::NoGradGuard no_grad;
    at::Tensor image = torch::from_blob(pixels.data(), {height, width}, torch::kUInt8).clone();
    at::Tensor boxes = torch::from_blob(box_values.data(), {n_boxes, 4}, torch::kFloat32).clone();
    at::Tensor mask = predictor.get_method("segment_2d")({image, boxes}).toTensor().contiguous();
    std::ofstream out(argv[5], std::ios::binary);
    out.write(reinterpret_cast<const char*>(mask.data_ptr<uint8_t>()), static_cast<std::streamsize>(mask.numel()));
    std::cout << "wrote " << argv[5] << " (" << mask.size(0) << "x" << mask.size(1) << ", "
              << (mask > 0).sum().item<int64_t>() << " foreground pixels)\n";
  } catch (const std::exception& err) {
    // TorchScript errors (torch::jit::JITException) end with the artifact's one-line message,
    // e.g. "builtins.ValueError: box 0 lies outside the image along x: ..."; print just that line.
    std::string text = err.what();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const size_t cut = text.rfind('\n');
    std::cerr << "error: " << (cut == std::string::npos ? text : text.substr(cut + 1)) << "\n";
    return 1;
  }
  return 0;
}
