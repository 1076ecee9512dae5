// libopus for decoding, mixing and encoding audio.
#pragma once
#include <opus/opus.h>
